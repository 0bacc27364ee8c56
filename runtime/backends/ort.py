"""ONNX Runtime backend (CPU by default; CUDA/TensorRT execution providers selectable)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from runtime.backends.base import BackendUnavailable, check_feeds
from runtime.errors import BundleError
from runtime.manifest import TensorSpec

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
}


class OrtBackend:
    """Runs one ONNX graph in an ONNX Runtime session.

    Args:
        model_path: the ``.onnx`` file (external data next to it).
        providers: execution providers in priority order, e.g.
            ``("CUDAExecutionProvider", "CPUExecutionProvider")``.
        intra_op_threads: threads per operator; 0 lets ONNX Runtime decide.
    """

    def __init__(
        self,
        model_path: str | Path,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        intra_op_threads: int = 0,
    ) -> None:
        import onnxruntime as ort

        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise BackendUnavailable(
                f"ONNX Runtime here lacks {missing[0]} (available: {', '.join(ort.get_available_providers())})"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(model_path), options, providers=list(providers))
        except Exception as exc:  # onnxruntime raises several unrelated exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"{model_path}: ONNX Runtime cannot load it ({first})") from None
        self.inputs = tuple(_spec(i) for i in self._session.get_inputs())
        self.outputs = tuple(_spec(o) for o in self._session.get_outputs())
        self.providers = tuple(self._session.get_providers())
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


def _spec(node: object) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else str(d) for d in node.shape)  # type: ignore[attr-defined]
    dtype = _ORT_TYPES.get(node.type, node.type)  # type: ignore[attr-defined]
    return TensorSpec(node.name, shape, dtype)  # type: ignore[attr-defined]
