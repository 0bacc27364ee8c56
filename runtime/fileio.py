"""Small file helpers shared by the input loaders: safe .npy reads and optional imports."""

from __future__ import annotations

import importlib
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.errors import InputError

_PIP_NAMES = {"PIL": "pillow"}  # import name -> distribution name, where they differ


class MissingExtraError(InputError, ImportError):
    """An optional package is not installed; the message names the pip extra."""


def import_extra(module: str, purpose: str, extra: str = "inputs") -> ModuleType:
    """Import ``module`` or raise a one-line :class:`MissingExtraError` naming the extra.

    Args:
        module: dotted module name, e.g. ``"PIL.Image"``.
        purpose: what needs it, e.g. ``"image decoding"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        package = _PIP_NAMES.get(module.split(".", maxsplit=1)[0], module.split(".", maxsplit=1)[0])
        raise MissingExtraError(
            f"{purpose} needs the {package!r} package: install it with `pip install 'edgebind[{extra}]'`"
        ) from None


def read_npy(path: str | Path) -> NDArray[Any]:
    """Read one array from a ``.npy`` file, never unpickling objects.

    Raises:
        InputError: missing file, truncated or corrupt data, an ``.npz`` archive,
            or an object array (one line naming the file).
    """
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc}); re-save it with numpy.save") from None
    if not isinstance(arr, np.ndarray):
        raise InputError(f"{path}: expected one .npy array, not an .npz archive")
    return arr
