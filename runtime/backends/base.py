"""The Backend protocol every inference engine implements, and feed validation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from runtime.errors import EdgebindError, InputError
from runtime.manifest import TensorSpec

__all__ = ["Backend", "BackendUnavailable", "TensorSpec", "check_feeds"]


class BackendUnavailable(EdgebindError):
    """The requested backend cannot run here (unknown name or missing framework)."""


@runtime_checkable
class Backend(Protocol):
    """A loaded model that maps named input arrays to named output arrays.

    Outputs are owned by the caller: a backend never hands out a buffer it will
    overwrite on the next call. Backends are context managers; ``close`` frees
    the engine. ``last_latency_s`` is the wall time of the last ``infer`` call.
    """

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    last_latency_s: float

    def infer(self, feeds: Mapping[str, NDArray[np.generic]]) -> dict[str, NDArray[np.generic]]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Backend: ...

    def __exit__(self, *exc: object) -> None: ...


def check_feeds(feeds: Mapping[str, NDArray[np.generic]], specs: Sequence[TensorSpec]) -> None:
    """Check names, ranks, static dims, dtypes and finiteness of ``feeds`` against ``specs``.

    Raises:
        InputError: one line naming the tensor and the mismatch.
    """
    names = {s.name for s in specs}
    extra = sorted(set(feeds) - names)
    if extra:
        raise InputError(f"unexpected input tensor {extra[0]!r} (model inputs: {', '.join(sorted(names))})")
    for spec in specs:
        if spec.name not in feeds:
            raise InputError(f"missing input tensor {spec.name!r}")
        arr = feeds[spec.name]
        if arr.dtype != np.dtype(spec.dtype):
            raise InputError(f"input {spec.name!r}: dtype {arr.dtype} but the model expects {spec.dtype}")
        if arr.ndim != len(spec.shape) or any(
            isinstance(want, int) and got != want for got, want in zip(arr.shape, spec.shape, strict=True)
        ):
            raise InputError(f"input {spec.name!r}: shape {tuple(arr.shape)} but the model expects {tuple(spec.shape)}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InputError(f"input {spec.name!r}: contains NaN or Inf values")
