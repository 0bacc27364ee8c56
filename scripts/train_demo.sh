#!/usr/bin/env bash
# Regenerate the committed demo bundle (bundles/demo) from scratch: the miniature ImageBind on sim://.
#   stage 1: image + text towers trained together on sim RGB frames and their captions;
#   stage 2: both frozen; audio, depth, thermal and IMU encoders trained against the images only;
#   then emergent text->sensor zero-shot top-1 on held-out seeds vs chance and a text-paired control,
#   and the export of the trained checkpoint with the project's bundle stage.
# About 15-20 minutes on a free 2-core CPU. Reports: runs/miniature/results.md, results.json, loss.png.
# Extra arguments go to `python -m export.train.miniature` (see --help), e.g. --out DIR --bundle DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m export.train.miniature --out runs/miniature --bundle bundles/demo "$@"
