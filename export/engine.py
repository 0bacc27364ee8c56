"""``python -m export.engine --bundle DIR``: build TensorRT engines on the target device (no torch).

Builds one strongly typed engine per modality and precision from the bundle's
FP16/INT8 ONNX files (precision lives in the graph, design §5), with an
optimisation profile for the batch sizes the runtime sends, a persisted timing
cache and a workspace cap, writes ``<modality>.<precision>.plan`` and records the
engine with its fingerprint (TensorRT version, GPU, compute capability) in the
manifest, where the runtime checks it before loading.

Example (Jetson Orin Nano, 8 GB)::

    python -m export.engine --bundle bundles/edge --precision fp16,int8 --batch 1,8 --workspace-mb 1024
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.engine_build import EngineBuildError, build_plan, import_tensorrt
from runtime.backends.tensorrt import GpuInfo, query_gpu
from runtime.errors import BundleError, EdgebindError
from runtime.manifest import PRECISIONS, Artifact, ModalitySpec, ModelManifest, file_sha256, load_manifest
from runtime.types import Modality

TIMING_CACHE_NAME = "tensorrt.timing.cache"
DEFAULT_PRECISIONS = ("fp16", "int8")
DEFAULT_BATCHES = (1, 8)
# (plan, spec, rows to try, capture CUDA graphs) -> problem line, or "" when the engine ran.
Verifier = Callable[[Path, ModalitySpec, Sequence[int], bool], str]


@dataclass(frozen=True)
class EngineOptions:
    """What :func:`build_engines` builds.

    Attributes:
        bundle: the bundle directory (engines are written into it).
        precisions: which ONNX artifacts to build from (``fp16``, ``int8``; ``fp32`` allowed).
        modalities: empty = every modality in the manifest.
        batches: windows per call the runtime sends, most common first (opt), largest = max.
        workspace_mb: TensorRT workspace pool cap in MiB.
        timing_cache: timing-cache file (default ``<bundle>/tensorrt.timing.cache``).
        cuda_graphs: verify CUDA-graph capture on the built engine and record it as the runtime default.
    """

    bundle: Path
    precisions: tuple[str, ...] = DEFAULT_PRECISIONS
    modalities: tuple[Modality, ...] = ()
    batches: tuple[int, ...] = DEFAULT_BATCHES
    workspace_mb: int = 1024
    timing_cache: Path | None = None
    cuda_graphs: bool = False


@dataclass(frozen=True)
class EngineResult:
    """Outcome for one modality/precision: a plan, a skip reason or an error (one line each)."""

    modality: Modality
    precision: str
    plan: Path | None = None
    seconds: float = 0.0
    note: str = ""
    error: str = ""


def parse_batches(text: str) -> tuple[int, ...]:
    """``"1,8"`` -> ``(1, 8)``; every entry a positive integer, order kept (first = most common)."""
    try:
        batches = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise EdgebindError(f"--batch {text!r}: expected comma-separated positive integers, e.g. 1,8") from None
    if not batches or min(batches) < 1:
        raise EdgebindError(f"--batch {text!r}: expected comma-separated positive integers, e.g. 1,8")
    return batches


def parse_precisions(text: str) -> tuple[str, ...]:
    """``"fp16,int8"`` -> ``("fp16", "int8")``; unknown names are a one-line error."""
    precisions = tuple(p.strip().lower() for p in text.split(",") if p.strip())
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise EdgebindError(f"--precision {text!r}: expected a comma-separated subset of {', '.join(PRECISIONS)}")
    return precisions


def batch_profile(spec: ModalitySpec, batches: Sequence[int]) -> dict[str, Any]:
    """The optimisation profile of ``spec``'s input for the runtime's batch sizes.

    A window of a multi-clip modality (audio: 3 clips) is ``clips_per_input`` rows, so
    ``rows = batch * clips_per_input``: min 1 row, opt the first (most common) batch, max the largest.

    Returns:
        ``{"input": name, "min": [1, *row], "opt": [...], "max": [...]}`` (int lists, JSON-ready).

    Raises:
        BundleError: a non-batch input dimension is not static.
    """
    row = list(spec.input.shape[1:])
    if not all(isinstance(d, int) for d in row):
        raise BundleError(f"{spec.modality.value}: input shape {spec.input.shape} has dynamic non-batch dims")
    clips = max(1, spec.clips_per_input)
    opt, top = batches[0] * clips, max(batches) * clips
    return {"input": spec.input.name, "min": [1, *row], "opt": [opt, *row], "max": [top, *row]}


def engine_fingerprint(
    trt_version: str, gpu: GpuInfo, profile: dict[str, Any], onnx: Artifact, workspace_mb: int
) -> dict[str, Any]:
    """The manifest ``engine`` dict the runtime compares before loading a plan."""
    return {
        "tensorrt_version": trt_version,
        "gpu_name": gpu.name,
        "compute_capability": gpu.compute_capability,
        "profiles": [profile],
        "built_from": onnx.file,
        "built_from_sha256": onnx.sha256,
        "workspace_mb": workspace_mb,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def verify_plan(plan: Path, spec: ModalitySpec, rows: Sequence[int], cuda_graphs: bool) -> str:
    """Run ``plan`` on random rows with :class:`TensorRTBackend` (needs pycuda); "" when it works.

    With ``cuda_graphs`` each batch runs twice (uncaptured, then replayed) and must agree.
    """
    from runtime.backends.tensorrt import TensorRTBackend

    gen = np.random.default_rng(0)
    with TensorRTBackend(plan, cuda_graphs=cuda_graphs) as backend:
        for n in rows:
            shape = (n, *spec.input.shape[1:])
            x = gen.standard_normal(shape).astype(spec.input.dtype) if spec.input.dtype.startswith("float") else (
                np.zeros(shape, spec.input.dtype))  # fmt: skip
            first = backend.infer({spec.input.name: x})[spec.output.name]
            again = backend.infer({spec.input.name: x})[spec.output.name]
            if not np.isfinite(first).all():
                return f"{plan.name}: non-finite outputs at batch {n}"
            if not np.allclose(first, again, rtol=1e-3, atol=1e-4):
                return f"{plan.name}: CUDA-graph replay differs from the direct run at batch {n}"
    return ""


def _default_verifier() -> Verifier | None:
    try:
        import pycuda.driver  # noqa: F401
    except ImportError:
        return None
    return verify_plan


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _build_one(
    trt: Any, manifest: ModelManifest, spec: ModalitySpec, precision: str, *, opts: EngineOptions, gpu: GpuInfo,
    verifier: Verifier | None,
) -> tuple[EngineResult, ModelManifest]:  # fmt: skip
    mod = spec.modality
    try:
        onnx = spec.artifact(precision, "onnx")
    except BundleError:
        return EngineResult(mod, precision, note=f"skipped: the bundle has no {precision} ONNX"), manifest
    profile = batch_profile(spec, opts.batches)
    start = time.perf_counter()
    cache = opts.timing_cache or opts.bundle / TIMING_CACHE_NAME
    try:
        blob = build_plan(trt, manifest.path(onnx.file), [profile], opts.workspace_mb, cache)
    except EngineBuildError as exc:
        return EngineResult(mod, precision, error=str(exc)), manifest
    plan = opts.bundle / f"{mod.value}.{precision}.plan"
    _write_atomic(plan, blob)
    engine = engine_fingerprint(str(trt.__version__), gpu, profile, onnx, opts.workspace_mb)
    note = "not run here (no pycuda)"
    if verifier is not None:
        problem = verifier(plan, spec, sorted({profile["opt"][0], profile["max"][0]}), opts.cuda_graphs)
        if problem:
            plan.unlink()
            return EngineResult(mod, precision, error=problem), manifest
        note = "ran" + (" with CUDA graphs" if opts.cuda_graphs else "")
        engine["cuda_graphs"] = opts.cuda_graphs
    elif opts.cuda_graphs:
        note += "; CUDA graphs not verified, not recorded"
    art = Artifact(plan.name, "tensorrt", precision, file_sha256(plan), plan.stat().st_size, engine=engine)
    manifest = manifest.with_artifact(mod, art)
    manifest.write()
    return EngineResult(mod, precision, plan, time.perf_counter() - start, note=note), manifest


def build_engines(
    opts: EngineOptions,
    trt: Any = None,
    gpu: GpuInfo | None = None,
    verifier: Verifier | str | None = "auto",
    report: Callable[[EngineResult], None] | None = None,
) -> list[EngineResult]:
    """Build every requested engine; the manifest is rewritten after each one.

    Args:
        trt: the ``tensorrt`` module (default: imported here, with an install hint if missing).
        gpu: this device (default: :func:`runtime.backends.tensorrt.query_gpu`).
        verifier: runs each new plan; ``"auto"`` = :func:`verify_plan` when pycuda imports, None = skip.
        report: called with each result as it completes.

    Raises:
        EdgebindError: unreadable bundle, unknown modality, TensorRT missing.
    """
    trt = trt if trt is not None else import_tensorrt()
    gpu = gpu if gpu is not None else query_gpu()
    check = _default_verifier() if verifier == "auto" else verifier
    if isinstance(check, str):
        raise ValueError(f"verifier {check!r}: expected a callable, None or 'auto'")
    manifest = load_manifest(opts.bundle)
    results = []
    for mod in opts.modalities or tuple(manifest.modalities):
        for precision in opts.precisions:
            spec = manifest.spec(mod)
            result, manifest = _build_one(trt, manifest, spec, precision, opts=opts, gpu=gpu, verifier=check)
            results.append(result)
            if report is not None:
                report(result)
    return results


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.engine", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True, help="bundle directory (engines are written into it)")
    p.add_argument("--precision", default=",".join(DEFAULT_PRECISIONS), help="comma list of fp16,int8,fp32")
    p.add_argument("--modalities", nargs="+", default=[], help="subset of: " + " ".join(m.value for m in Modality))
    p.add_argument("--batch", default="1,8", help="windows per call, most common first (profile opt), e.g. 1,8")
    p.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT workspace cap in MiB (8 GB boards: 1024)")
    p.add_argument("--timing-cache", type=Path, help=f"timing cache file (default: <bundle>/{TIMING_CACHE_NAME})")
    p.add_argument("--cuda-graphs", action="store_true", help="verify CUDA-graph capture and make it the default")
    return p


def _print(result: EngineResult) -> None:
    head = f"{result.modality.value} {result.precision}"
    if result.error:
        for line in result.error.splitlines():
            print(f"error: {head}: {line}", file=sys.stderr)
    elif result.plan is None:
        print(f"{head}: {result.note}")
    else:
        mb = result.plan.stat().st_size / 1e6
        print(f"{head}: {result.plan.name} {mb:.1f} MB in {result.seconds:.1f} s ({result.note})")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; 0 when every requested engine was built, 1 when some failed, 2 on bad input."""
    args = _parser().parse_args(argv)
    try:
        opts = EngineOptions(
            bundle=args.bundle,
            precisions=parse_precisions(args.precision),
            modalities=tuple(Modality.parse(m) for m in args.modalities),
            batches=parse_batches(args.batch),
            workspace_mb=args.workspace_mb,
            timing_cache=args.timing_cache,
            cuda_graphs=args.cuda_graphs,
        )
        if opts.workspace_mb < 16:
            raise EdgebindError(f"--workspace-mb {opts.workspace_mb}: too small (>= 16)")
        results = build_engines(opts, report=_print)
    except (EdgebindError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    built = sum(r.plan is not None for r in results)
    failed = sum(bool(r.error) for r in results)
    print(f"built {built} engine(s) into {opts.bundle}; {failed} failed")
    return 1 if failed or not built else 0


if __name__ == "__main__":
    sys.exit(main())
