"""``python -m export bundle|precision ...``: export encoders into a bundle directory.

Examples::

    python -m export bundle --checkpoint imagebind_huge.pth --config imagebind_huge \\
        --out bundles/huge --modalities audio imu --precision fp32,fp16,int8
    python -m export precision --bundle bundles/huge --precision int8 \\
        --calibration sim://demo?seed=1 --calibration-method entropy

FP32 is always exported; FP16 and INT8 are added after it from the FP32 graphs
(:mod:`export.precision`), each behind the accuracy gate against FP32 on held-out windows.
The default calibration source is ``sim://demo?seed=1`` (the synthetic world, every event
class each minute). ``precision`` never imports torch: it runs on a machine with only
onnx and onnxruntime. Exit status 1 when a requested artifact failed its gate (and
``--force`` was not given), 2 on errors.
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

DEFAULT_CALIBRATION = "sim://demo?seed=1"  # = calibration.sets.DEFAULT_SOURCE (not imported: keep startup light)


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
    b.add_argument("--precision", default="fp32", help="comma-separated: fp32 (always), fp16, int8")
    _precision_args(b)
    p = sub.add_parser("precision", help="add gated FP16/INT8 encoders to an existing bundle (no torch)")
    p.add_argument("--bundle", type=Path, required=True, help="bundle directory")
    p.add_argument("--precision", default="fp16,int8", help="comma-separated subset of fp16, int8")
    p.add_argument("--modalities", nargs="+", default=[], help="subset of the bundle's modalities (default all)")
    p.add_argument("--quiet", action="store_true", help="no progress display, summary only")
    _precision_args(p)
    return parser


def _precision_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calibration", default=DEFAULT_CALIBRATION,
                   help=f"INT8 calibration and gate source: sim://SCENARIO?seed=N, replay://FILE.npz or a folder "
                        f"(default {DEFAULT_CALIBRATION})")  # fmt: skip
    p.add_argument("--calibration-method", default="percentile", choices=("percentile", "minmax", "entropy"),
                   help="INT8 activation range method")  # fmt: skip
    p.add_argument("--calibration-windows", type=int, default=64, help="calibration windows per modality "
                   "(the gate compares as many held-out windows)")  # fmt: skip
    p.add_argument("--calibration-seed", type=int, default=None, help="selection/scene seed (default: the URI's)")
    p.add_argument("--force", action="store_true", help="write artifacts that fail the accuracy gate, flagged")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    args = _parser().parse_args(argv)
    try:
        return _bundle(args) if args.command == "bundle" else _precision(args)
    except (EdgebindError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _bundle(args: argparse.Namespace) -> int:
    from export.bundle import BundleOptions, build_bundle

    precisions = _parse_precisions(args.precision)
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
    extra = tuple(p for p in precisions if p != "fp32")
    return _add_precisions(manifest, extra, args) if extra else 0


def _precision(args: argparse.Namespace) -> int:
    from runtime.manifest import load_manifest

    precisions = tuple(p for p in _parse_precisions(args.precision) if p != "fp32")
    if not precisions:
        raise EdgebindError(f"--precision {args.precision!r}: nothing to add (give fp16 and/or int8)")
    manifest = load_manifest(args.bundle)
    mods = tuple(Modality.parse(m) for m in args.modalities)
    return _add_precisions(manifest, precisions, args, mods)


def _parse_precisions(text: str) -> tuple[str, ...]:
    from export.precision import parse_precisions  # torch-free

    return parse_precisions(text)


def _add_precisions(manifest, precisions, args, mods=()) -> int:  # type: ignore[no-untyped-def]
    """Run export.precision (torch-free), print the gate table and one line per failure; the exit status."""
    from export.precision import add_precisions

    if args.calibration_windows < 2:
        raise EdgebindError(f"--calibration-windows {args.calibration_windows}: need >= 2")

    def run(_opts, progress=None):  # type: ignore[no-untyped-def]
        return add_precisions(manifest, precisions, calibration_source=args.calibration,
                              method=args.calibration_method, windows=args.calibration_windows,
                              seed=args.calibration_seed, force=args.force, progress=progress, modalities=mods)

    start = time.perf_counter()
    result = run(None) if args.quiet else _with_progress(run, None)
    _gate_summary(result, time.perf_counter() - start)
    for outcome in result.outcomes:
        if not outcome.written or outcome.forced:
            print(("warning: " if outcome.forced else "error: ") + outcome.line(), file=sys.stderr)
    return 0 if result.ok else 1


def _gate_summary(result, elapsed_s: float) -> None:  # type: ignore[no-untyped-def]
    print(f"{'modality':<9} {'prec':<5} {'MB':>7} {'cos mean':>9} {'cos p1':>9} {'top-1':>7} {'windows':>7} "
          f"{'bank':<24} status")  # fmt: skip
    for o in result.outcomes:
        g = o.gate
        status = "error" if o.error else ("forced" if o.forced else ("written" if o.written else "REJECTED"))
        if g is None:
            print(f"{o.modality:<9} {o.precision:<5} {'-':>7} {'-':>9} {'-':>9} {'-':>7} {'-':>7} {'-':<24} {status}")
            continue
        mb = f"{o.size_bytes / 1e6:.1f}" if o.written else "-"
        print(f"{o.modality:<9} {o.precision:<5} {mb:>7} {g.cosine_mean:>9.5f} {g.cosine_p1:>9.5f} "
              f"{g.top1_agreement:>7.1%} {g.windows:>7} {g.bank:<24} {status}")  # fmt: skip
    written = sum(o.written for o in result.outcomes)
    print(f"{written}/{len(result.outcomes)} artifact(s) written in {elapsed_s:.1f} s; "
          f"gate report: {result.manifest.root / 'gate_report.json'}")


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
