"""GPU encoder latency with only PyTorch installed: ``python -m benchmarks.gpu [--budget-s 420] [--out DIR]``.

Random-weight encoders built from ``export.model`` (default ``imagebind_huge``; no bundle needed)
at each batch size: PyTorch FP32 eager (the baseline), FP16 eager, FP16 with one captured CUDA
graph, the runtime's torch backend on a ``torch.export`` program with CUDA graphs, and
``torch.compile(mode="reduce-overhead")`` FP16 (time-boxed). TensorRT, pycuda and ONNX Runtime
CUDA rows are measured when installed (and a ``--bundle`` carries their artifacts), otherwise
reported absent. CUDA-event timing, medians, cosine vs FP32 eager per row. Every variant runs in
try/except; a global budget skips what no longer fits. Writes ``gpu-<name>.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, cosine_stats, latency_stats, machine_info, structured_inputs

BASELINE = "pytorch-eager"
Fn = Callable[[], Any]


@dataclass
class Ctx:
    """State shared by the variants of one run."""

    args: argparse.Namespace
    device: Any
    deadline: float
    work: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    models: dict[str, Any] = field(default_factory=dict)
    refs: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)

    def left(self) -> float:
        return self.deadline - time.monotonic()


@contextlib.contextmanager
def time_box(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the main thread after ``seconds`` (no-op where SIGALRM is missing)."""
    if seconds <= 0 or not hasattr(signal, "setitimer"):
        yield
        return

    def _raise(_sig: int, _frame: Any) -> None:
        raise TimeoutError(f"gave up after {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def time_fn(ctx: Ctx, fn: Fn) -> list[float]:
    """Seconds per call: CUDA events on a GPU, perf_counter elsewhere, after warm-up."""
    import torch

    for _ in range(ctx.args.warmup):
        fn()
    if ctx.device.type != "cuda":
        from benchmarks.common import measure

        return measure(fn, ctx.args.iters, 0)
    torch.cuda.synchronize()
    event = torch.cuda.Event
    pairs = [(event(enable_timing=True), event(enable_timing=True)) for _ in range(ctx.args.iters)]
    for start, end in pairs:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) / 1e3 for s, e in pairs]


def measure_variant(ctx: Ctx, key: tuple[str, str, str, int], make: Callable[[], Fn], need_s: float) -> None:
    """Build ``make()`` (returns a no-arg call giving the output), time it, add one row; errors become rows."""
    import torch

    mod, engine, precision, batch = key
    row: dict[str, Any] = {"modality": mod, "engine": engine, "precision": precision, "batch": batch,
                           "baseline": engine == BASELINE and precision == "fp32", "status": "ok"}  # fmt: skip
    if ctx.left() < need_s:
        why = f"time budget ({ctx.left():.0f} s left, needs ~{need_s:.0f} s)"
        ctx.rows.append({**row, "status": "skipped", "reason": why})
        return
    try:
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with time_box(min(ctx.left(), ctx.args.variant_s if engine != "torch.compile" else ctx.args.compile_s)):
            fn = make()
            times = time_fn(ctx, fn)
            out = _numpy(fn())
    except Exception as exc:  # every failure is a row, the run goes on
        ctx.rows.append({**row, "status": _status(exc), "reason": _one_line(exc)})
        return
    stats = latency_stats(times)
    row.update(stats, iters=len(times), throughput_rows_s=batch * 1e3 / stats["p50_ms"])
    row["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20 if ctx.device.type == "cuda" else None
    if row["baseline"]:
        ctx.refs[(mod, batch)] = out
    if (mod, batch) in ctx.refs:
        row.update(cosine_stats(out, ctx.refs[(mod, batch)]))
    ctx.rows.append(row)


def _status(exc: BaseException) -> str:
    return "absent" if type(exc).__name__ in {"BackendUnavailable", "ModuleNotFoundError", "Absent"} else "error"


class Absent(Exception):
    """A path that is not installed here (becomes an ``absent`` row)."""


def _numpy(y: Any) -> np.ndarray:
    if isinstance(y, dict):
        y = next(iter(y.values()))
    if hasattr(y, "detach"):
        y = y.detach().float().cpu().numpy()
    return np.asarray(y, dtype=np.float32)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    if isinstance(exc, Absent) and text:
        return text[0]
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


# --- the variants ----------------------------------------------------------------------------------------


def model_for(ctx: Ctx, mod: str) -> Any:
    """The seeded random-weight FP32 encoder of ``mod`` on the device (built on CPU: seed-stable)."""
    import torch

    from export.config import load_config
    from export.model import build_model

    if mod not in ctx.models:
        torch.manual_seed(ctx.args.seed)
        ctx.models[mod] = build_model(load_config(ctx.args.config), [mod]).eval().to(ctx.device)
    return ctx.models[mod]


def example(ctx: Ctx, mod: str, batch: int, half: bool = False) -> Any:
    import torch

    model = model_for(ctx, mod)
    x = torch.from_numpy(structured_inputs(mod, model.input_shape(mod), batch, ctx.args.seed + 7)).to(ctx.device)
    return x.half() if half and x.is_floating_point() else x


def eager(ctx: Ctx, mod: str, batch: int, half: bool) -> Fn:
    import torch

    model = copy.deepcopy(model_for(ctx, mod)).half() if half else model_for(ctx, mod)
    x = example(ctx, mod, batch, half)

    def run() -> Any:
        with torch.inference_mode():
            return model.encode(mod, x)

    return run


def cuda_graph(ctx: Ctx, mod: str, batch: int) -> Fn:
    """FP16 encoder captured once into a CUDA graph; a call is one replay."""
    import torch

    if ctx.device.type != "cuda":
        raise Absent("CUDA graphs need a CUDA device")
    model = copy.deepcopy(model_for(ctx, mod)).half()
    x = example(ctx, mod, batch, half=True)
    with torch.inference_mode():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                model.encode(mod, x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y = model.encode(mod, x)

    def run() -> Any:
        graph.replay()
        return y

    return run


def compiled(ctx: Ctx, mod: str, batch: int) -> Fn:
    """``torch.compile(mode="reduce-overhead")`` of the FP16 encoder (compiles on the first calls)."""
    import torch

    model = copy.deepcopy(model_for(ctx, mod)).half()
    x = example(ctx, mod, batch, half=True)
    fn = torch.compile(lambda t: model.encode(mod, t), mode="reduce-overhead", dynamic=False)

    def run() -> Any:
        with torch.inference_mode():
            return fn(x).clone()

    for _ in range(3):
        run()
    return run


def torch_backend(ctx: Ctx, mod: str, batch: int) -> Fn:
    """The runtime torch backend (CUDA graphs, FP16) over a ``torch.export`` program of the FP32 tower."""
    if importlib.util.find_spec("runtime.backends.pyt") is None:
        raise Absent("runtime/backends/pyt.py is not in this checkout")
    from runtime.backends import open_backend

    path = export_program(ctx, mod)
    cuda = ctx.device.type == "cuda"
    backend = open_backend("torch", str(path), device=str(ctx.device), fp16=cuda, cuda_graphs=cuda)
    x = example(ctx, mod, batch).cpu().numpy()
    name = backend.inputs[0].name
    return lambda: backend.infer({name: x})


def export_program(ctx: Ctx, mod: str) -> Path:
    """``<work>/<mod>.fp32.pt2``: ``torch.export`` of this run's FP32 tower (so cosines compare like with like)."""
    import torch

    path = ctx.work / f"{mod}.fp32.pt2"
    if not path.exists():
        model = model_for(ctx, mod)

        class Tower(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return model.encode(mod, x)

        batch = torch.export.Dim("batch", min=1, max=64)
        program = torch.export.export(Tower().eval(), (example(ctx, mod, 2),), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))
    return path


def bundle_backend(ctx: Ctx, mod: str, batch: int, kind: str, precision: str) -> Fn:
    """A runtime backend (tensorrt, ort-cuda) on the ``--bundle`` artifact of ``precision``."""
    from runtime.backends import backend_format, open_backend

    module = {"tensorrt": "tensorrt", "ort-cuda": "onnxruntime"}[kind]
    if importlib.util.find_spec(module) is None:
        raise Absent(f"{module} is not installed")
    if kind == "tensorrt" and importlib.util.find_spec("pycuda") is None:
        raise Absent("pycuda is not installed")
    if not ctx.args.bundle:
        raise Absent(f"no --bundle with {backend_format(kind)}/{precision} artifacts given")
    from runtime.manifest import load_manifest

    manifest = load_manifest(ctx.args.bundle, verify_hashes=False)
    art = manifest.spec(mod).artifact(precision, backend_format(kind))
    opts: dict[str, Any] = {"engine_fingerprint": art.engine} if getattr(art, "engine", None) else {}
    if kind == "tensorrt":
        opts["cuda_graphs"] = True
    backend = open_backend(kind, str(manifest.path(art.file)), **opts)
    x = example(ctx, mod, batch).cpu().numpy()
    name = backend.inputs[0].name
    return lambda: backend.infer({name: x})


# --- the run ---------------------------------------------------------------------------------------------


def phases(ctx: Ctx) -> Iterator[tuple[tuple[str, str, str, int], Callable[[], Fn], float]]:
    """(row key, builder, seconds it needs) in priority order: cheap paths for every modality first."""
    mods, batches = ctx.args.modalities, ctx.args.batch
    for mod in mods:
        for b in batches:
            yield (mod, BASELINE, "fp32", b), lambda m=mod, b=b: eager(ctx, m, b, half=False), 5.0
            yield (mod, BASELINE, "fp16", b), lambda m=mod, b=b: eager(ctx, m, b, half=True), 5.0
            yield (mod, "cuda-graph", "fp16", b), lambda m=mod, b=b: cuda_graph(ctx, m, b), 5.0
    for mod in mods:
        for b in batches:
            yield (mod, "torch-backend", "fp16", b), lambda m=mod, b=b: torch_backend(ctx, m, b), 20.0
            for kind, prec in (("tensorrt", "fp16"), ("tensorrt", "int8"), ("ort-cuda", "fp16")):
                yield (mod, kind, prec, b), lambda m=mod, b=b, k=kind, p=prec: bundle_backend(ctx, m, b, k, p), 10.0
    for b in batches:  # the slowest path last, batch 1 of every modality first
        for mod in mods:
            yield (mod, "torch.compile", "fp16", b), lambda m=mod, b=b: compiled(ctx, m, b), ctx.args.compile_need_s


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every variant within the budget; returns the report payload."""
    import torch

    from benchmarks.latency import add_ratios

    start = time.monotonic()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="edgebind-gpu-") as tmp:
        ctx = Ctx(args, device, start + args.budget_s, Path(tmp))
        for key, make, need in phases(ctx):
            if key[2] == "fp16" and key[1] == "torch.compile" and args.compile_s <= 0:
                ctx.rows.append(_row(key, "skipped", "torch.compile disabled (--compile-s 0)"))
                continue
            print(f"[{time.monotonic() - start:5.0f} s] {' '.join(map(str, key))}", file=sys.stderr, flush=True)
            measure_variant(ctx, key, make, need)
    add_ratios(ctx.rows)
    return {"meta": gpu_meta(args, device, time.monotonic() - start), "rows": ctx.rows}


def _row(key: tuple[str, str, str, int], status: str, reason: str) -> dict[str, Any]:
    mod, engine, precision, batch = key
    return {"modality": mod, "engine": engine, "precision": precision, "batch": batch, "baseline": False,
            "status": status, "reason": reason}  # fmt: skip


def gpu_meta(args: argparse.Namespace, device: Any, wall_s: float) -> dict[str, Any]:
    """Machine, card, driver and library versions, and the method."""
    import torch

    meta = machine_info(torch.get_num_threads())
    meta.update(model=args.config, random_weights=True, seed=args.seed, bundle=str(args.bundle or "-"),
                iters=args.iters, warmup=args.warmup, warmup_s=0, rounds=1, acc_n="batch-size",
                timing="CUDA events" if device.type == "cuda" else "perf_counter", wall_s=wall_s,
                budget_s=args.budget_s, device=str(device), model_id="random")  # fmt: skip
    if device.type == "cuda":
        from benchmarks.latency import gpu_info

        props = torch.cuda.get_device_properties(device)
        meta["gpu"] = {**gpu_info(), "name": props.name, "capability": f"{props.major}.{props.minor}",
                       "memory_gb": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda,
                       "cudnn": torch.backends.cudnn.version()}  # fmt: skip
    return meta


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="imagebind_huge", help="model config preset or JSON file")
    p.add_argument("--bundle", type=Path, default=None, help="optional bundle with tensorrt/onnx artifacts")
    p.add_argument("--modalities", nargs="+", default=["audio", "depth", "thermal", "imu", "text", "vision"])
    p.add_argument("--batch", type=lambda t: [int(v) for v in t.split(",")], default=[1, 8])
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda")
    p.add_argument("--budget-s", type=float, default=420.0, help="global time budget; later variants are skipped")
    p.add_argument("--variant-s", type=float, default=90.0, help="time box of one variant")
    p.add_argument("--compile-s", type=float, default=120.0, help="time box of one torch.compile (0: skip)")
    p.add_argument("--compile-need-s", type=float, default=45.0, help="budget left needed to start a compile")
    p.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else RESULTS)
    p.add_argument("--name", default=None, help="report tag (default: <gpu or host>-<date>)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run and write ``gpu-<name>.{json,md,png}``; returns the exit status."""
    from benchmarks.latency_report import write_report

    args = parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA device visible to PyTorch (pass --device cpu to test the plumbing)", file=sys.stderr)
        return 2
    payload = run(args)
    meta = payload["meta"]
    card = str(meta.get("gpu", {}).get("name", meta["host"])).replace("NVIDIA ", "").replace(" ", "-").lower()
    md = write_report(payload, args.out, f"gpu-{args.name or card}-{meta['date']}")
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
