"""``python -m export bundle ...``: export encoders into a bundle directory.

Example::

    python -m export bundle --checkpoint imagebind_huge.pth --config imagebind_huge \\
        --out bundles/huge --modalities audio imu
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from runtime.errors import EdgebindError
from runtime.types import Modality


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bundle", help="export FP32 ONNX encoders, manifest and vocabulary")
    b.add_argument("--config", required=True, help="preset name (imagebind_huge, ...) or JSON config file")
    b.add_argument("--checkpoint", type=Path, help="state_dict file in the official layout (.pth/.pt)")
    b.add_argument("--random-weights", action="store_true", help="seeded random weights (benchmarks, demos)")
    b.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    b.add_argument("--modalities", nargs="+", default=[], help="subset of: " + " ".join(m.value for m in Modality))
    b.add_argument("--vocab", type=Path, help="CLIP BPE merges file (default: from open-clip-torch)")
    b.add_argument("--preprocess", type=Path, help="JSON object of per-modality preprocessing overrides")
    b.add_argument("--seed", type=int, default=0, help="seed for --random-weights")
    b.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17)")
    b.add_argument("--quiet", action="store_true", help="no progress display, summary only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    args = _parser().parse_args(argv)
    try:
        return _bundle(args)
    except (EdgebindError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _bundle(args: argparse.Namespace) -> int:
    from export.bundle import BundleOptions, build_bundle

    if args.opset < 17:
        raise EdgebindError(f"--opset {args.opset}: need >= 17 (single LayerNormalization node)")
    overrides = {}
    if args.preprocess:
        try:
            overrides = json.loads(args.preprocess.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise EdgebindError(f"{args.preprocess}: unreadable preprocessing JSON ({exc})") from None
    opts = BundleOptions(
        config=args.config,
        out_dir=args.out,
        checkpoint=args.checkpoint,
        random_weights=args.random_weights,
        modalities=tuple(Modality.parse(m) for m in args.modalities),
        vocab=args.vocab,
        preprocess=overrides,
        seed=args.seed,
        opset=args.opset,
    )
    start = time.perf_counter()
    if args.quiet:
        manifest = build_bundle(opts)
    else:
        manifest = _with_progress(build_bundle, opts)
    _summary(manifest, time.perf_counter() - start)
    return 0


def _with_progress(build, opts):  # type: ignore[no-untyped-def]
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        return build(opts, lambda msg, frac: print(f"[{frac:4.0%}] {msg}", file=sys.stderr))
    columns = (TextColumn("{task.description:<22}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("starting", total=1.0)
        return build(opts, lambda msg, frac: bar.update(task, description=msg, completed=frac))


def _summary(manifest, elapsed_s: float) -> None:  # type: ignore[no-untyped-def]
    print(f"bundle {manifest.root}  model {manifest.model_name}  id {manifest.model_id[:12]}  D={manifest.embed_dim}")
    print(f"{'modality':<9} {'input':<24} {'scale':>7} {'MB':>8} {'cos(ort,torch)':>15} {'max|d|/scale':>13}")
    for mod, spec in manifest.modalities.items():
        art = spec.artifacts[0]
        shape = "x".join(str(d) for d in spec.input.shape)
        print(
            f"{mod.value:<9} {shape:<24} {spec.output_scale:>7.3f} {art.size_bytes / 1e6:>8.1f} "
            f"{spec.parity['cosine_min']:>15.8f} {spec.parity['max_abs_per_scale']:>13.2e}"
        )
    print(f"exported {len(manifest.modalities)} encoder(s) in {elapsed_s:.1f} s; parity checked in ONNX Runtime")


if __name__ == "__main__":
    sys.exit(main())
