"""Backend registry: name -> ("module:Class", pip extra, artifact format), resolved only when asked (design §2).

A missing optional framework gives one line naming the extra to install instead of
an import crash deep inside a backend.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

from runtime.backends.base import Backend, BackendUnavailable, TensorSpec, check_feeds


class BackendEntry(NamedTuple):
    """Where a backend lives and what it runs.

    Attributes:
        target: ``"module:Class"``.
        extra: the ``pip install 'edgebind[extra]'`` that provides its framework.
        format: the manifest artifact format it runs (``onnx``, ``tensorrt``, ``torch_export``).
    """

    target: str
    extra: str
    format: str


_REGISTRY: dict[str, BackendEntry] = {
    "ort": BackendEntry("runtime.backends.ort:OrtBackend", "ort", "onnx"),
    "ort-cuda": BackendEntry("runtime.backends.ort:OrtCudaBackend", "ort-gpu", "onnx"),
    "ort-tensorrt": BackendEntry("runtime.backends.ort:OrtTensorRTBackend", "ort-gpu", "onnx"),
    "tensorrt": BackendEntry("runtime.backends.tensorrt:TensorRTBackend", "tensorrt", "tensorrt"),
    "torch": BackendEntry("runtime.backends.pyt:TorchBackend", "torch", "torch_export"),
}

__all__ = [
    "Backend",
    "BackendEntry",
    "BackendUnavailable",
    "TensorSpec",
    "available_backends",
    "backend_format",
    "check_feeds",
    "open_backend",
]


def available_backends() -> tuple[str, ...]:
    """Names accepted by :func:`open_backend`."""
    return tuple(_REGISTRY)


def _entry(kind: str) -> BackendEntry:
    if kind not in _REGISTRY:
        raise BackendUnavailable(f"unknown backend {kind!r}: expected one of {', '.join(_REGISTRY)}")
    return _REGISTRY[kind]


def backend_format(kind: str) -> str:
    """The manifest artifact format backend ``kind`` runs (``"onnx"``, ``"tensorrt"``, ``"torch_export"``).

    Raises:
        BackendUnavailable: unknown name.
    """
    return _entry(kind).format


def open_backend(kind: str, model_path: str, **options: Any) -> Backend:
    """Open backend ``kind`` on the model file ``model_path``.

    Raises:
        BackendUnavailable: unknown name, or its framework is not installed.
    """
    entry = _entry(kind)
    module_name, cls_name = entry.target.split(":")
    hint = f"install it with `pip install 'edgebind[{entry.extra}]'`"
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, cls_name)
        backend: Backend = cls(model_path, **options)
    except ImportError as exc:  # the framework is imported by the module or its constructor
        raise BackendUnavailable(f"backend {kind!r} unavailable: {exc} ({hint})") from None
    return backend
