"""ONNX Runtime backend: CPU by default; CUDA and TensorRT execution providers selectable.

Registry names: ``ort`` (CPU), ``ort-cuda`` (:class:`OrtCudaBackend`), ``ort-tensorrt``
(:class:`OrtTensorRTBackend`); all run the bundle's ``onnx`` artifacts.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.backends.base import BackendUnavailable, check_feeds
from runtime.errors import BundleError, ConfigError
from runtime.manifest import PRECISIONS, TensorSpec

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
}
# provider short name -> execution providers in priority order (CPU last, for unsupported ops).
PROVIDER_CHAINS: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}
SESSION_KEYS = ("disabled_optimizers", "graph_optimization_level", "inter_op_threads", "config_entries")
_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}  # fmt: skip


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/edgebind/ort-tensorrt`` (``~/.cache/...``): TensorRT EP engines and timing cache."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edgebind" / "ort-tensorrt"


def precision_of(model_path: str | Path) -> str:
    """The precision in a bundle file name ``<modality>.<precision>.onnx``; ``"fp32"`` if none."""
    match = re.search(r"\.(fp32|fp16|int8)\.onnx$", str(model_path))
    return match.group(1) if match else "fp32"


def tensorrt_ep_options(
    precision: str, cache_dir: Path, workspace_mb: int = 1024, device_id: int = 0
) -> dict[str, str]:
    """TensorRT execution-provider options consistent with the artifact's precision.

    FP16 and INT8 precision already live in the graph (mixed-precision casts, symmetric Q/DQ);
    the matching ``trt_*_enable`` flag lets TensorRT run those layers in that precision, and
    an FP32 artifact enables neither, so TensorRT never lowers what the gate measured in FP32.
    Engines and the timing cache persist in ``cache_dir``.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return {
        "device_id": str(device_id),
        "trt_fp16_enable": str(precision == "fp16"),
        "trt_int8_enable": str(precision == "int8"),
        "trt_max_workspace_size": str(workspace_mb << 20),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache_dir / "engines"),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache_dir / "timing"),
    }


def check_providers(wanted: Sequence[str], available: Sequence[str]) -> None:
    """Raise a one-line BackendUnavailable naming the first missing provider and the available ones."""
    missing = [p for p in wanted if p not in available]
    if missing:
        raise BackendUnavailable(
            f"ONNX Runtime here lacks {missing[0]} (available: {', '.join(available) or 'none'}); "
            "install onnxruntime-gpu (CUDA/TensorRT) or pick another backend"
        )


def _session_options(ort: Any, intra_op_threads: int, extra: Mapping[str, Any]) -> tuple[Any, list[str]]:
    """SessionOptions from ``extra`` (keys in :data:`SESSION_KEYS`) and the disabled optimizers."""
    unknown = sorted(set(extra) - set(SESSION_KEYS))
    if unknown:
        raise ConfigError(f"session_options: unknown key {unknown[0]!r} (known: {', '.join(SESSION_KEYS)})")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = int(extra.get("inter_op_threads", 0))
    options.log_severity_level = 3
    level = extra.get("graph_optimization_level")
    if level is not None:
        if level not in _LEVELS:
            raise ConfigError(f"graph_optimization_level {level!r}: expected one of {', '.join(_LEVELS)}")
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level])
    for key, value in dict(extra.get("config_entries", {})).items():
        options.add_session_config_entry(str(key), str(value))
    return options, [str(name) for name in extra.get("disabled_optimizers", ())]


class OrtBackend:
    """Runs one ONNX graph in an ONNX Runtime session.

    Args:
        model_path: the ``.onnx`` file (external data next to it).
        provider: ``"cpu"``, ``"cuda"`` or ``"tensorrt"`` (see :data:`PROVIDER_CHAINS`).
        providers: explicit execution providers in priority order; overrides ``provider``.
        intra_op_threads: threads per operator; 0 lets ONNX Runtime decide.
        session_options: ``disabled_optimizers`` (e.g. ``["MatMulAddFusion"]`` for some INT8
            graphs), ``graph_optimization_level`` (disable/basic/extended/all),
            ``inter_op_threads``, ``config_entries`` (ORT session config keys).
        precision: artifact precision for the TensorRT EP flags; default from the file name.
        cache_dir: TensorRT EP engine and timing cache directory (default :func:`default_cache_dir`).
        workspace_mb: TensorRT EP workspace cap.
        device_id: CUDA device for the CUDA/TensorRT providers.
    """

    provider = "cpu"

    def __init__(
        self,
        model_path: str | Path,
        *,
        provider: str | None = None,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 0,
        session_options: Mapping[str, Any] | None = None,
        precision: str | None = None,
        cache_dir: str | Path | None = None,
        workspace_mb: int = 1024,
        device_id: int = 0,
        **_: Any,
    ) -> None:
        import onnxruntime as ort

        provider = provider or self.provider
        if provider not in PROVIDER_CHAINS and providers is None:
            raise ConfigError(f"provider {provider!r}: expected one of {', '.join(PROVIDER_CHAINS)}")
        chain = tuple(providers) if providers is not None else PROVIDER_CHAINS[provider]
        check_providers(chain, ort.get_available_providers())
        options, disabled = _session_options(ort, intra_op_threads, session_options or {})
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        per_provider: dict[str, dict[str, str]] = {"CUDAExecutionProvider": {"device_id": str(device_id)}}
        if "TensorrtExecutionProvider" in chain:
            cache.mkdir(parents=True, exist_ok=True)
            trt = tensorrt_ep_options(precision or precision_of(model_path), cache, workspace_mb, device_id)
            per_provider["TensorrtExecutionProvider"] = trt
        provider_options = [per_provider.get(p, {}) for p in chain]
        try:
            self._session = ort.InferenceSession(
                str(model_path), options, providers=list(chain), provider_options=provider_options,
                disabled_optimizers=disabled,
            )  # fmt: skip
        except Exception as exc:  # onnxruntime raises several unrelated exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"{model_path}: ONNX Runtime cannot load it ({first})") from None
        self.providers = tuple(self._session.get_providers())
        if chain[0] not in self.providers:
            raise BackendUnavailable(
                f"ONNX Runtime could not enable {chain[0]} (missing CUDA/cuDNN/TensorRT libraries?); "
                f"the session fell back to {', '.join(self.providers)}"
            )
        self.inputs = tuple(_spec(i) for i in self._session.get_inputs())
        self.outputs = tuple(_spec(o) for o in self._session.get_outputs())
        self.last_latency_s = 0.0

    def infer(self, feeds: Mapping[str, NDArray[np.generic]]) -> dict[str, NDArray[np.generic]]:
        """Run the graph; returns new arrays keyed by output name."""
        check_feeds(feeds, self.inputs)
        start = time.perf_counter()
        values = self._session.run(None, dict(feeds))
        self.last_latency_s = time.perf_counter() - start
        return {spec.name: np.asarray(v) for spec, v in zip(self.outputs, values, strict=True)}

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]

    def __enter__(self) -> OrtBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OrtCudaBackend(OrtBackend):
    """ONNX Runtime with the CUDA execution provider (CPU fallback for unsupported ops)."""

    provider = "cuda"


class OrtTensorRTBackend(OrtBackend):
    """ONNX Runtime with the TensorRT execution provider (then CUDA, then CPU)."""

    provider = "tensorrt"


def _spec(node: object) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else str(d) for d in node.shape)  # type: ignore[attr-defined]
    dtype = _ORT_TYPES.get(node.type, node.type)  # type: ignore[attr-defined]
    return TensorSpec(node.name, shape, dtype)  # type: ignore[attr-defined]
