"""Backend registry: name -> "module:Class", resolved only when asked (design §2).

A missing optional framework gives one line naming the extra to install instead of
an import crash deep inside a backend.
"""

from __future__ import annotations

import importlib
from typing import Any

from runtime.backends.base import Backend, BackendUnavailable, TensorSpec, check_feeds

_REGISTRY: dict[str, tuple[str, str]] = {
    # name: ("module:Class", pip extra)
    "ort": ("runtime.backends.ort:OrtBackend", "ort"),
}

__all__ = ["Backend", "BackendUnavailable", "TensorSpec", "available_backends", "check_feeds", "open_backend"]


def available_backends() -> tuple[str, ...]:
    """Names accepted by :func:`open_backend`."""
    return tuple(_REGISTRY)


def open_backend(kind: str, model_path: str, **options: Any) -> Backend:
    """Open backend ``kind`` on the model file ``model_path``.

    Raises:
        BackendUnavailable: unknown name, or its framework is not installed.
    """
    if kind not in _REGISTRY:
        raise BackendUnavailable(f"unknown backend {kind!r}: expected one of {', '.join(_REGISTRY)}")
    target, extra = _REGISTRY[kind]
    module_name, cls_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailable(
            f"backend {kind!r} unavailable: {exc} (install it with `pip install 'edgebind[{extra}]'`)"
        ) from None
    cls = getattr(module, cls_name)
    backend: Backend = cls(model_path, **options)
    return backend
