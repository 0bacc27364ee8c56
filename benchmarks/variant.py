"""One benchmark variant in its own process: ``python -m benchmarks.variant SPEC.json RESULT.json``.

A variant is one (modality, engine, precision, batch): the PyTorch eager model (``kind
"eager"``, from a tower state_dict written by the reference step) or a runtime backend
opened through ``runtime.backends.open_backend``. The process loads it, times it, runs
the accuracy inputs and writes a result JSON, so peak memory is its own and variants
never share caches or thread pools. torch is imported only for eager/torch variants.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.common import measure

Runner = Callable[[NDArray[Any]], NDArray[Any]]


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Load, time and evaluate the variant described by ``spec`` (see :func:`benchmarks.latency.variant_spec`)."""
    from runtime.backends import BackendUnavailable

    rows = np.load(spec["inputs"])
    batch = int(spec["batch"])
    start = time.perf_counter()
    try:
        run, sync, close = _open(spec)
    except BackendUnavailable as exc:
        return {"status": "absent", "reason": _one_line(exc)}
    load_s = time.perf_counter() - start
    try:
        load_peak = _peak_rss_mb()
        _reset_peak_rss()
        x = _take(rows, batch)
        times = measure(lambda: run(x), int(spec["iters"]), int(spec["warmup"]), sync, float(spec.get("warmup_s", 0)))
        outputs = np.concatenate([run(rows[i : i + batch]) for i in range(0, int(spec["acc_n"]), batch)])
        np.save(spec["outputs"], outputs.astype(np.float32))
        return {"status": "ok", "times_s": times, "load_s": load_s, "peak_rss_mb": max(load_peak, _peak_rss_mb()),
                "run_rss_mb": _vm_hwm_mb(), "gpu_peak_mb": _gpu_peak_mb(spec)}  # fmt: skip
    finally:
        close()


def run_reference(spec: dict[str, Any]) -> dict[str, Any]:
    """Rebuild the bundle's FP32 model, check its weights hash, save each tower and its reference outputs.

    Refuses (``status "refused"``) when the state_dict hash differs from the bundle's ``model_id``:
    a baseline from other weights would make every accuracy column meaningless.
    """
    import torch

    from export.checkpoint import load_checkpoint, load_state_dict_file, state_dict_sha256
    from export.config import load_config
    from export.model import build_model

    torch.set_num_threads(int(spec["threads"]))
    torch.manual_seed(int(spec["seed"]))
    model = build_model(load_config(spec["config"]), spec["built"])
    if spec.get("checkpoint"):
        load_checkpoint(model, load_state_dict_file(spec["checkpoint"]))
    state = model.state_dict()
    digest = state_dict_sha256(state)
    if digest != spec["model_id"]:
        how = f"checkpoint {spec['checkpoint']}" if spec.get("checkpoint") else f"seed {spec['seed']}"
        return {"status": "refused", "reason": f"PyTorch FP32 baseline ({spec['config']}, {how}) has weights hash "
                f"{digest[:12]} but the bundle's model_id is {spec['model_id'][:12]}; pass the --checkpoint "
                "(and --config) the bundle was exported from"}  # fmt: skip
    out_dir = Path(spec["out_dir"])
    for mod, inputs in spec["modalities"].items():
        tower = {k: v for k, v in state.items() if k.split(".")[1:2] == [mod]}
        torch.save(tower, out_dir / f"{mod}.tower.pt")
        rows = torch.from_numpy(np.load(inputs)[: int(spec["acc_n"])])
        with torch.inference_mode():
            np.save(out_dir / f"{mod}.reference.npy", model.encode(mod, rows).numpy().astype(np.float32))
    return {"status": "ok", "model_id": digest}


def _take(rows: NDArray[Any], batch: int) -> NDArray[Any]:
    reps = -(-batch // len(rows))
    return np.ascontiguousarray(np.concatenate([rows] * reps)[:batch])


def _open(spec: dict[str, Any]) -> tuple[Runner, Callable[[], Any] | None, Callable[[], None]]:
    if spec["kind"] == "eager":
        return _open_eager(spec)
    from runtime.backends import open_backend

    backend = open_backend(spec["kind"], spec["model_path"], **spec.get("options", {}))
    name = spec["input_name"]

    def run(x: NDArray[Any]) -> NDArray[Any]:
        return next(iter(backend.infer({name: x}).values()))

    return run, None, backend.close


def _open_eager(spec: dict[str, Any]) -> tuple[Runner, Callable[[], Any] | None, Callable[[], None]]:
    import torch

    from export.config import load_config
    from export.model import build_model

    torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec.get("device", "cpu"))
    model = build_model(load_config(spec["config"]), [spec["modality"]])
    model.load_state_dict(torch.load(spec["model_path"], map_location="cpu", mmap=True), strict=True)
    model = model.eval().to(device)
    mod = spec["modality"]

    def run(x: NDArray[Any]) -> NDArray[Any]:
        with torch.inference_mode():
            y = model.encode(mod, torch.from_numpy(x).to(device))
        return np.asarray(y.float().cpu().numpy())

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    return run, sync, lambda: None


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _reset_peak_rss() -> None:
    """Reset VmHWM (Linux >= 4.0) so the run phase's peak is measured apart from loading."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _vm_hwm_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return None


def _gpu_peak_mb(spec: dict[str, Any]) -> float | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return float(torch.cuda.max_memory_allocated()) / 2**20


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run one spec file and write its result file; returns 0 also for absent/error results."""
    spec_path, result_path = (argv if argv is not None else sys.argv[1:])[:2]
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = run_reference(spec) if spec["kind"] == "reference" else run_spec(spec)
    except Exception as exc:  # any failure becomes a row, never a crash of the whole benchmark
        result = {"status": "error", "reason": _one_line(exc)}
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
