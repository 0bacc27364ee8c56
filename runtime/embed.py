"""``python -m runtime.embed``: embed files or strings with a bundle, write (N, D) float32 .npy.

Inputs per modality: WAV (audio); PNG/JPEG (vision); 16-bit PNG in millimetres or .npy
in metres (depth); PNG or radiometric .npy (thermal); .npy/.csv with --rate-hz (imu);
the strings themselves (text). ``--preprocessed`` takes one .npy already in the
encoder's input layout, batch first. Output rows are in input order and equal the
official forward's output (scale included); ``--unit`` writes unit vectors.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime import inputs
from runtime.backends import available_backends
from runtime.embedder import Embedder
from runtime.errors import EdgebindError
from runtime.manifest import PRECISIONS, ModelManifest, load_manifest
from runtime.types import Modality


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.embed", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True, help="bundle directory (with manifest.json)")
    p.add_argument("--modality", required=True, choices=[m.value for m in Modality])
    p.add_argument("inputs", nargs="+", help="input files, or the strings themselves for text")
    p.add_argument("--out", type=Path, required=True, help="output .npy, (N, D) float32")
    p.add_argument("--preprocessed", action="store_true", help="one .npy already in the model layout")
    p.add_argument("--unit", action="store_true", help="write L2-normalised rows")
    p.add_argument("--rate-hz", type=float, help="sample rate of IMU inputs without timestamps")
    p.add_argument("--backend", default="ort", choices=available_backends())
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="artifact precision (default fp32)")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: backend default)")
    p.add_argument(
        "--provider",
        action="append",
        dest="providers",
        help="ONNX Runtime execution provider, repeatable, in priority order (default: CPUExecutionProvider)",
    )
    p.add_argument("--skip-hash-check", action="store_true", help="do not verify artifact SHA-256 digests")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns 0 on success, 2 on bad input (every failed input is listed)."""
    args = _parser().parse_args(argv)
    try:
        manifest = load_manifest(args.bundle, verify_hashes=not args.skip_hash_check)
        modality = Modality.parse(args.modality)
        x, errors = _load(manifest, modality, args)
        if errors:
            for line in errors:
                print(f"error: {line}", file=sys.stderr)
            print(f"error: {len(errors)} of {len(args.inputs)} input(s) failed; nothing written", file=sys.stderr)
            return 2
        start = time.perf_counter()
        options: dict[str, Any] = {"intra_op_threads": args.threads}
        if args.providers:
            options["providers"] = tuple(args.providers)
        with Embedder(manifest, args.backend, args.precision, **options) as embedder:
            batch = embedder.embed(modality, x)
        elapsed_s = time.perf_counter() - start
        vectors = batch.unit() if args.unit else batch.vectors
        _save(args.out, vectors)
    except EdgebindError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out}: {vectors.shape[0]} x {vectors.shape[1]} float32 "
        f"({modality.value}, {'unit' if args.unit else 'scaled'}) in {elapsed_s * 1e3:.0f} ms",
        file=sys.stderr,
    )
    return 0


def _load(
    manifest: ModelManifest, modality: Modality, args: argparse.Namespace
) -> tuple[NDArray[np.generic], list[str]]:
    spec = manifest.spec(modality)
    if args.preprocessed:
        if len(args.inputs) != 1:
            return np.empty(0), ["--preprocessed takes exactly one .npy file"]
        return inputs.load_preprocessed(args.inputs[0], spec), []
    if modality is Modality.TEXT:
        if not manifest.vocab:
            return np.empty(0), [f"bundle {manifest.root} has no tokenizer vocabulary; re-export it with text"]
        return inputs.tokenize(args.inputs, manifest.path(manifest.vocab["file"])), []
    x, errors = inputs.load_batch(spec, args.inputs, args.rate_hz)
    return (x if x is not None else np.empty(0)), errors


def _save(path: Path, vectors: NDArray[np.float32]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, vectors.astype(np.float32))
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
