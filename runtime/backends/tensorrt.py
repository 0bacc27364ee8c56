"""TensorRT backend: a serialized engine (``.plan``) run with tensorrt + pycuda.

Named-tensor I/O (TensorRT 10/11: ``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``), device and pinned host buffers allocated once for the
engine's largest profile batch, one CUDA stream, optional CUDA-graph capture per
batch size. tensorrt and pycuda are imported inside functions only (design §2).

Engines are tied to the TensorRT version and GPU they were built on; the
fingerprint the export stage wrote into the manifest is compared with this
device *before* deserialising, so a mismatch is one line, not a crash.
"""

from __future__ import annotations

import ctypes
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.backends.base import BackendUnavailable, check_feeds
from runtime.errors import BundleError, InputError
from runtime.manifest import TensorSpec

REBUILD_HINT = "rebuild with python -m export.engine --bundle {bundle}"


@dataclass(frozen=True)
class GpuInfo:
    """The GPU an engine is built for or runs on.

    Attributes:
        name: device name as CUDA reports it (``"Orin"``, ``"NVIDIA H100 80GB HBM3"``); ``""`` unknown.
        compute_capability: ``"major.minor"`` (``"8.7"``); ``""`` unknown.
    """

    name: str
    compute_capability: str


def parse_nvidia_smi(text: str, device: int = 0) -> GpuInfo:
    """Parse ``nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader`` output.

    Jetson boards print ``[N/A]`` for fields NVML cannot read; those become ``""``.
    """
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if device >= len(lines):
        return GpuInfo("", "")
    name, _, cap = lines[device].rpartition(",")
    name, cap = name.strip(), cap.strip()
    unknown = {"[N/A]", "N/A", "[Not Supported]"}
    return GpuInfo("" if name in unknown else name, "" if cap in unknown else cap)


def query_gpu(device: int = 0, run: Callable[..., Any] = subprocess.run) -> GpuInfo:
    """Name and compute capability of CUDA device ``device``: pycuda first, then nvidia-smi.

    Returns ``GpuInfo("", "")`` when neither can tell (no GPU, no driver).
    """
    try:
        import pycuda.driver as cuda

        cuda.init()
        dev = cuda.Device(device)
        major, minor = dev.compute_capability()
        return GpuInfo(str(dev.name()), f"{major}.{minor}")
    except Exception:  # ImportError, or a CUDA error without a driver: fall through
        pass
    try:
        done = run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return GpuInfo("", "")
    return parse_nvidia_smi(done.stdout, device) if done.returncode == 0 else GpuInfo("", "")


def _norm_gpu(name: str) -> str:
    """``"NVIDIA Orin (nvgpu)"`` and ``"Orin"`` compare equal: case, vendor prefix, parentheses dropped."""
    out, depth = [], 0
    for ch in name:
        depth += ch == "("
        if depth == 0:
            out.append(ch)
        depth -= ch == ")" and depth > 0
    text = " ".join("".join(out).lower().split())
    return text.removeprefix("nvidia ").strip()


def _same_version(a: str, b: str) -> bool:
    """Equal on every component both versions state (``"10.3"`` matches ``"10.3.0.30"``)."""
    pa, pb = a.split("."), b.split(".")
    n = min(len(pa), len(pb))
    return n > 0 and pa[:n] == pb[:n]


def _describe(fp: Mapping[str, Any]) -> str:
    gpu = fp.get("gpu_name") or "an unknown GPU"
    cap = fp.get("compute_capability") or "?"
    return f"TensorRT {fp.get('tensorrt_version') or '?'} on {gpu} ({cap})"


def fingerprint_mismatch(built: Mapping[str, Any], running: Mapping[str, Any], bundle: str | Path) -> str | None:
    """Compare an engine's fingerprint with this device; return the refusal line or None.

    Args:
        built: the manifest's ``engine`` dict (``tensorrt_version``, ``gpu_name``, ``compute_capability``).
        running: the same keys for this process (empty values = unknown, not compared).
        bundle: the bundle directory named in the rebuild hint.
    """
    checks = (
        ("tensorrt_version", _same_version),
        ("compute_capability", lambda a, b: a == b),
        ("gpu_name", lambda a, b: _norm_gpu(a) == _norm_gpu(b)),
    )
    for key, same in checks:
        a, b = str(built.get(key) or ""), str(running.get(key) or "")
        if a and b and not same(a, b):
            return (
                f"engine built with {_describe(built)}; this device runs {_describe(running)}: "
                + REBUILD_HINT.format(bundle=bundle)
            )
    return None


def running_fingerprint(device: int = 0) -> dict[str, str]:
    """``{tensorrt_version, gpu_name, compute_capability}`` of this process (tensorrt must import)."""
    import tensorrt as trt

    gpu = query_gpu(device)
    version = str(trt.__version__)
    return {"tensorrt_version": version, "gpu_name": gpu.name, "compute_capability": gpu.compute_capability}


def _import_stack() -> tuple[Any, Any]:
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable(
            "backend 'tensorrt' needs the TensorRT Python bindings (JetPack: sudo apt-get install "
            "python3-libnvinfer; x86: pip install tensorrt)"
        ) from None
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise BackendUnavailable(
            "backend 'tensorrt' needs pycuda (pip install pycuda, built against this CUDA toolkit)"
        ) from None
    return trt, cuda


class _CudaGraphs:
    """A tiny ctypes shim over the CUDA driver's stream-capture API (pycuda has none)."""

    THREAD_LOCAL = 1  # CU_STREAM_CAPTURE_MODE_THREAD_LOCAL

    def __init__(self) -> None:
        self._lib = ctypes.CDLL("libcuda.so.1")

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            raise BackendUnavailable(f"CUDA graph {what} failed (CUresult {status}); run without cuda_graphs")

    def capture(self, stream: int, enqueue: Callable[[], object]) -> ctypes.c_void_p:
        """Record ``enqueue()`` on ``stream`` and return an instantiated graph."""
        handle = ctypes.c_void_p(stream)
        self._check(self._lib.cuStreamBeginCapture_v2(handle, self.THREAD_LOCAL), "capture")
        graph = ctypes.c_void_p()
        try:
            enqueue()
        finally:
            self._check(self._lib.cuStreamEndCapture(handle, ctypes.byref(graph)), "end of capture")
        exe = ctypes.c_void_p()
        self._check(self._lib.cuGraphInstantiateWithFlags(ctypes.byref(exe), graph, ctypes.c_ulonglong(0)), "build")
        self._lib.cuGraphDestroy(graph)
        return exe

    def launch(self, exe: ctypes.c_void_p, stream: int) -> None:
        self._check(self._lib.cuGraphLaunch(exe, ctypes.c_void_p(stream)), "launch")

    def destroy(self, exe: ctypes.c_void_p) -> None:
        self._lib.cuGraphExecDestroy(exe)


@dataclass
class _Binding:
    """One I/O tensor: its spec, pinned host buffer and device buffer (both max-batch sized)."""

    spec: TensorSpec
    host: NDArray[Any]
    device: Any


class TensorRTBackend:
    """Runs one TensorRT engine on the GPU.

    Args:
        model_path: the ``.plan`` file (serialized engine, batch dimension dynamic).
        engine_fingerprint: the manifest's ``engine`` dict; compared with this device before loading.
        cuda_graphs: capture one CUDA graph per batch size (after its first, uncaptured, run).
        device: CUDA device index.

    Attributes:
        max_batch: the largest batch (rows) the engine's optimisation profile accepts.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        engine_fingerprint: dict[str, Any] | None = None,
        cuda_graphs: bool = False,
        device: int = 0,
        **_: Any,
    ) -> None:
        trt, cuda = _import_stack()
        path = Path(model_path)
        if engine_fingerprint:
            refusal = fingerprint_mismatch(engine_fingerprint, running_fingerprint(device), path.parent)
            if refusal:
                raise BundleError(f"{path}: {refusal}")
        cuda.init()
        self._cuda = cuda
        self._ctx = cuda.Device(device).retain_primary_context()
        self._ctx.push()
        try:
            self._load(trt, path)
        finally:
            cuda.Context.pop()
        use_graphs = cuda_graphs or bool((engine_fingerprint or {}).get("cuda_graphs"))
        self._graphs = _CudaGraphs() if use_graphs else None
        self._captured: dict[int, ctypes.c_void_p] = {}
        self.last_latency_s = 0.0

    def _load(self, trt: Any, path: Path) -> None:
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise BundleError(
                f"{path}: TensorRT cannot deserialise this engine (another TensorRT version or GPU?); "
                + REBUILD_HINT.format(bundle=path.parent)
            )
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.max_batch = int(self._engine.get_tensor_profile_shape(inputs[0], 0)[2][0])
        self._in = [self._bind(trt, n) for n in inputs]
        self._out = [self._bind(trt, n) for n in names if n not in inputs]
        self.inputs = tuple(b.spec for b in self._in)
        self.outputs = tuple(b.spec for b in self._out)
        self._stream = self._cuda.Stream()

    def _bind(self, trt: Any, name: str) -> _Binding:
        dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
        row = tuple(int(d) for d in self._engine.get_tensor_shape(name)[1:])
        host = self._cuda.pagelocked_empty((self.max_batch, *row), dtype)
        device = self._cuda.mem_alloc(max(host.nbytes, 1))
        self._context.set_tensor_address(name, int(device))
        return _Binding(TensorSpec(name, ("batch", *row), dtype.name), host, device)

    def infer(self, feeds: Mapping[str, NDArray[np.generic]]) -> dict[str, NDArray[np.generic]]:
        """Run the engine on ``feeds`` ((rows, *row) arrays); returns new arrays keyed by output name.

        Raises:
            InputError: bad names/shapes/dtypes, or more rows than the engine's profile allows.
        """
        check_feeds(feeds, self.inputs)
        rows = int(feeds[self._in[0].spec.name].shape[0])
        if not 1 <= rows <= self.max_batch:
            raise InputError(
                f"batch of {rows} rows is outside the engine's profile (1..{self.max_batch}); "
                "send smaller batches or rebuild with python -m export.engine --batch ...,N"
            )
        start = time.perf_counter()
        self._ctx.push()
        try:
            out = self._run(rows, feeds)
        finally:
            self._cuda.Context.pop()
        self.last_latency_s = time.perf_counter() - start
        return out

    def _run(self, rows: int, feeds: Mapping[str, NDArray[np.generic]]) -> dict[str, NDArray[np.generic]]:
        cuda, stream = self._cuda, self._stream
        for b in self._in:
            np.copyto(b.host[:rows], feeds[b.spec.name])
            self._context.set_input_shape(b.spec.name, b.host[:rows].shape)
            cuda.memcpy_htod_async(b.device, b.host[:rows], stream)
        if rows in self._captured and self._graphs is not None:
            self._graphs.launch(self._captured[rows], stream.handle)
        elif not self._context.execute_async_v3(stream.handle):
            raise BundleError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        for b in self._out:
            cuda.memcpy_dtoh_async(b.host[:rows], b.device, stream)
        stream.synchronize()
        result = {b.spec.name: b.host[:rows].copy() for b in self._out}
        if self._graphs is not None and rows not in self._captured:
            # The uncaptured run above flushed TensorRT's deferred shape work; now record one.
            enqueue = partial(self._context.execute_async_v3, stream.handle)
            self._captured[rows] = self._graphs.capture(stream.handle, enqueue)
        return result

    def close(self) -> None:
        """Free graphs, device buffers, the context and the engine."""
        if getattr(self, "_ctx", None) is None:
            return
        self._ctx.push()
        try:
            for exe in self._captured.values():
                self._graphs.destroy(exe)  # type: ignore[union-attr]
            self._captured.clear()
            for b in (*self._in, *self._out):
                b.device.free()
            self._context = self._engine = self._runtime = None
        finally:
            self._cuda.Context.pop()
        self._ctx.detach()
        self._ctx = None

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
