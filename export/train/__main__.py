"""``python -m export.train --config RUN.json [--resume] [--out DIR]``; under torchrun it runs DDP.

Examples:
    python -m export.train --config runs/audio.json --out runs/audio
    torchrun --nproc-per-node 8 -m export.train --config runs/audio.json --resume
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from runtime.errors import EdgebindError


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="python -m export.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="training config JSON (export.train.config.TrainConfig)")
    parser.add_argument("--out", default=None, help="run directory (overrides out_dir)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run dir")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Parse, train, print a one-line JSON summary on rank 0; returns the exit status."""
    args = build_parser().parse_args(argv)
    import torch

    from export.train.checkpointing import latest_checkpoint
    from export.train.config import load_train_config
    from export.train.distributed import cleanup_distributed, init_distributed
    from export.train.loop import Trainer
    from export.train.towers import dataset_from_spec

    cfg = load_train_config(args.config)
    if args.out:
        cfg = cfg.with_overrides(out_dir=args.out)
    if args.no_progress:
        cfg = cfg.with_overrides(progress=False)
    if not cfg.train_data:
        raise EdgebindError(f"{args.config}: train_data is empty; give a dataset factory")
    dist = init_distributed(cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()))
    try:
        train = dataset_from_spec(cfg.train_data, "train_data")
        val = dataset_from_spec(cfg.val_data, "val_data") if cfg.val_data else None
        trainer = Trainer(cfg, train, val, dist=dist)
        if args.resume and latest_checkpoint(trainer.checkpoint_dir) is not None:
            trainer.resume()  # --resume on a fresh run directory simply starts
        result = trainer.fit()
    finally:
        cleanup_distributed()
    if dist.is_main:
        last = next((r["loss"] for r in reversed(result.history) if "loss" in r), None)
        summary = {"step": result.step, "loss": last, **result.eval, "model": str(result.model_path)}
        print(json.dumps(summary))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user errors are one line on stderr and exit status 2."""
    try:
        return run(argv)
    except EdgebindError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
