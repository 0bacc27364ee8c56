"""Thermal frames to ImageBind thermal-encoder inputs (1, 224, 224), without torch.

ImageBind publishes no thermal loader (fact sheet §5.6). The community recipe
(ImageBind PR #73, issue #37): a grayscale ("L") image, short side resized to
224 with bicubic, centre-crop 224, scaled to [0, 1]; one measurement found
LLVIP accuracy better *without* a mean/std normalisation, so
``normalization="none"`` is the default here ("per_image" and "fixed" exist).

Two kinds of input, told apart by dtype:

* **Radiometric** (float kelvin, or integer counts such as TLinear centi-kelvin
  converted with ``kelvin = counts * raw_scale_k + raw_offset_k``): mapped to
  [0, 1] with a fixed temperature window (``min_k`` .. ``max_k``, default
  280 .. 320 K, the mapping of the parity fixtures' 8-bit PNGs) or per-image
  min-max, then resized with Pillow-"F"-mode bicubic semantics in numpy and
  clipped back to [0, 1] (as an 8-bit image saturates).
* **Non-radiometric** 8-bit images (uint8; an RGB PNG is converted to "L"):
  already tone-mapped by the camera, so only ``/ 255``; the resize goes through
  Pillow on the 8-bit image, exactly as torchvision ``Resize`` on a PIL image
  (so this path needs Pillow). :func:`preprocess_thermal_with_info` reports
  ``radiometric=False`` for them.

Pillow is imported inside functions, only for PNG files and 8-bit bicubic resizing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.config_util import DictConfig, check_choices, check_positive
from runtime.errors import ConfigError, InputError
from runtime.fileio import import_extra, read_npy
from runtime.preprocess.resize import center_crop, resize_bicubic_pil, resize_bilinear, short_side_size

_RANGE_MODES = ("fixed", "per_image")
_RESIZES = ("bicubic", "bilinear")
_NORMALIZATIONS = ("none", "per_image", "fixed")
_CELSIUS_HINT_K = 150.0  # a frame entirely below this is not plausibly kelvin
_PIL_PURPOSE = "thermal PNG decoding and 8-bit bicubic resizing"


@dataclass(frozen=True)
class ThermalPreprocess(DictConfig):
    """Every constant of the thermal pipeline; the defaults follow the community recipe (§5.6).

    Attributes:
        raw_scale_k: kelvin per count of integer radiometric frames (0.01 = centi-kelvin).
        raw_offset_k: kelvin added after scaling counts (e.g. 273.15 for centi-celsius).
        range_mode: kelvin -> [0, 1]: "fixed" (``(K - min_k) / (max_k - min_k)``, clipped)
            or "per_image" (frame min -> 0, max -> 1).
        min_k: temperature mapped to 0 by the fixed window, kelvin.
        max_k: temperature mapped to 1 by the fixed window, kelvin.
        resize: "bicubic" (Pillow semantics, as torchvision on a PIL image) or
            "bilinear" (torch ``interpolate`` semantics, no antialias).
        size: output side in pixels (the encoder takes 224).
        clip_unit_range: clip radiometric values to [0, 1] after resizing (bicubic overshoot).
        normalization: "none" (keep [0, 1]), "per_image" (standardise each frame,
            population std) or "fixed" (``(x - mean) / std``).
        mean: "fixed" normalisation mean, in [0, 1] units (0.5 with std 0.5 maps [0, 1]
            to [-1, 1]; no thermal statistics were published).
        std: "fixed" normalisation std, in [0, 1] units.
        std_eps: lower bound of per-image std and min-max range (a constant frame -> zeros).
    """

    raw_scale_k: float = 0.01
    raw_offset_k: float = 0.0
    range_mode: str = "fixed"
    min_k: float = 280.0
    max_k: float = 320.0
    resize: str = "bicubic"
    size: int = 224
    clip_unit_range: bool = True
    normalization: str = "none"
    mean: float = 0.5
    std: float = 0.5
    std_eps: float = 1e-6

    def __post_init__(self) -> None:
        check_choices(self, {"range_mode": _RANGE_MODES, "resize": _RESIZES, "normalization": _NORMALIZATIONS})
        check_positive(self, ("raw_scale_k", "std", "std_eps", "size"))
        if not 0.0 < self.min_k < self.max_k:
            raise ConfigError(f"ThermalPreprocess: need 0 < min_k < max_k, got {self.min_k}, {self.max_k}")

    @classmethod
    def community(cls) -> ThermalPreprocess:
        """The community recipe of §5.6 (the defaults): [0, 1], no mean/std."""
        return cls()

    @classmethod
    def fixture(cls) -> ThermalPreprocess:
        """The recipe of the parity fixture ``inputs/thermal.npy`` (8-bit PNG, per-image standardisation)."""
        return cls(normalization="per_image")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one model input: ``(1, size, size)``."""
        return (1, self.size, self.size)


@dataclass(frozen=True)
class ThermalInfo:
    """What the pipeline knew about one frame.

    Attributes:
        radiometric: True for kelvin / counts input, False for 8-bit intensities.
        min_k: coldest pixel in kelvin (NaN when not radiometric).
        max_k: hottest pixel in kelvin (NaN when not radiometric).
    """

    radiometric: bool
    min_k: float
    max_k: float


def preprocess_thermal(
    frame: NDArray[Any], cfg: ThermalPreprocess | None = None, name: str = "thermal"
) -> NDArray[np.float32]:
    """Turn one thermal frame into a thermal-encoder input.

    Args:
        frame: (H, W) array: float = kelvin; unsigned/signed integer wider than 8 bits =
            radiometric counts (``counts * raw_scale_k + raw_offset_k`` kelvin); uint8 =
            non-radiometric 8-bit intensities.
        cfg: pipeline constants; None uses the community defaults.
        name: how the frame is named in error messages (e.g. its file).

    Returns:
        float32 array (1, size, size); ``frame`` is not modified.

    Raises:
        InputError: not 2-D, non-finite or non-positive kelvin, unsupported dtype.
    """
    return preprocess_thermal_with_info(frame, cfg, name)[0]


def preprocess_thermal_with_info(
    frame: NDArray[Any], cfg: ThermalPreprocess | None = None, name: str = "thermal"
) -> tuple[NDArray[np.float32], ThermalInfo]:
    """:func:`preprocess_thermal` that also says whether the frame was radiometric."""
    cfg = cfg or ThermalPreprocess()
    arr = np.asarray(frame)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"{name}: expected one thermal frame (H, W), got shape {arr.shape}")
    if arr.dtype == np.uint8:
        unit = _resize_uint8(arr, cfg)
        info = ThermalInfo(radiometric=False, min_k=float("nan"), max_k=float("nan"))
    elif arr.dtype.kind in "fiu":
        kelvin = _to_kelvin(arr, cfg, name)
        unit = _resize_float(_kelvin_to_unit(kelvin, cfg), cfg)
        info = ThermalInfo(radiometric=True, min_k=float(kelvin.min()), max_k=float(kelvin.max()))
    else:
        raise InputError(f"{name}: unsupported thermal dtype {arr.dtype}; expected uint8, integer counts or kelvin")
    out = _normalize(center_crop(unit, cfg.size).astype(np.float64), cfg)
    return out.astype(np.float32)[None], info


def _to_kelvin(arr: NDArray[Any], cfg: ThermalPreprocess, name: str) -> NDArray[np.float64]:
    """A new float64 (H, W) kelvin array, validated."""
    if arr.dtype.kind == "f":
        kelvin = arr.astype(np.float64)
    else:
        kelvin = arr.astype(np.float64) * cfg.raw_scale_k + cfg.raw_offset_k
    if not np.isfinite(kelvin).all():
        raise InputError(f"{name}: {int((~np.isfinite(kelvin)).sum())} NaN/inf pixels; a thermal frame must be finite")
    if kelvin.min() <= 0.0:
        raise InputError(f"{name}: temperatures <= 0 K; float frames must be kelvin (celsius + 273.15)")
    if kelvin.max() < _CELSIUS_HINT_K:
        raise InputError(
            f"{name}: hottest pixel {kelvin.max():.1f} K; this looks like celsius or the wrong raw_scale_k"
        )
    return kelvin


def _kelvin_to_unit(kelvin: NDArray[np.float64], cfg: ThermalPreprocess) -> NDArray[np.float64]:
    if cfg.range_mode == "fixed":
        lo, hi = cfg.min_k, cfg.max_k
    else:
        lo, hi = float(kelvin.min()), float(kelvin.max())
    return np.clip((kelvin - lo) / max(hi - lo, cfg.std_eps), 0.0, 1.0)


def _resize_float(unit: NDArray[np.float64], cfg: ThermalPreprocess) -> NDArray[np.float32]:
    out_h, out_w = short_side_size(unit.shape[0], unit.shape[1], cfg.size)
    if cfg.resize == "bicubic":
        resized = resize_bicubic_pil(unit.astype(np.float32), out_h, out_w)
    else:
        resized = resize_bilinear(unit, out_h, out_w)
    return np.clip(resized, 0.0, 1.0) if cfg.clip_unit_range else resized


def _resize_uint8(img: NDArray[np.uint8], cfg: ThermalPreprocess) -> NDArray[np.float32]:
    """8-bit path: Pillow bicubic on the "L" image (torchvision on PIL), or bilinear on /255."""
    out_h, out_w = short_side_size(img.shape[0], img.shape[1], cfg.size)
    if cfg.resize == "bilinear":
        return resize_bilinear(img.astype(np.float32) / np.float32(255.0), out_h, out_w)
    image_module = import_extra("PIL.Image", _PIL_PURPOSE)
    pil = image_module.fromarray(np.ascontiguousarray(img))  # uint8 (H, W) -> mode "L"
    resized = np.asarray(pil.resize((out_w, out_h), image_module.Resampling.BICUBIC), dtype=np.uint8)
    return resized.astype(np.float32) / np.float32(255.0)


def _normalize(x: NDArray[np.float64], cfg: ThermalPreprocess) -> NDArray[np.float64]:
    if cfg.normalization == "per_image":
        return (x - x.mean()) / max(float(x.std()), cfg.std_eps)
    if cfg.normalization == "fixed":
        return (x - cfg.mean) / cfg.std
    return x


def load_thermal(path: str | Path, cfg: ThermalPreprocess | None = None) -> NDArray[np.float32]:
    """Read a thermal file and preprocess it into a thermal-encoder input.

    Args:
        path: .npy (H, W): uint16/integer radiometric counts, float kelvin or uint8
            intensities; or .png: 16-bit = radiometric counts, 8-bit grayscale =
            non-radiometric intensities (RGB / palette PNGs are converted to "L").
        cfg: pipeline constants; None uses the community defaults.

    Returns:
        float32 array (1, size, size).

    Raises:
        InputError: missing, truncated or malformed file, or an unusable frame.
    """
    return preprocess_thermal(read_thermal(path), cfg, name=str(path))


def read_thermal(path: str | Path) -> NDArray[Any]:
    """Decode a thermal file without processing it (see :func:`load_thermal` for formats).

    Returns:
        (H, W) array: uint8 intensities, uint16 counts, or the .npy's own dtype.

    Raises:
        InputError: the file is missing, truncated, not 2-D or of an unsupported type.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = read_npy(path)
    elif suffix == ".png":
        arr = _read_png(path)
    else:
        raise InputError(f"{path}: unsupported thermal file type {suffix!r}; use .png or .npy")
    if arr.ndim != 2:
        raise InputError(f"{path}: expected one thermal frame (H, W), got shape {arr.shape}")
    return arr


def _read_png(path: Path) -> NDArray[Any]:
    image_module = import_extra("PIL.Image", _PIL_PURPOSE)
    try:
        with image_module.open(path) as image:
            image.load()
            sixteen_bit = image.mode in ("I;16", "I;16B", "I;16L", "I")
            arr = np.asarray(image if sixteen_bit else image.convert("L"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except image_module.UnidentifiedImageError:
        raise InputError(f"{path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: truncated or corrupt PNG ({exc})") from None
    if not sixteen_bit:
        return arr.astype(np.uint8)
    return arr.astype(np.uint16) if arr.dtype.kind == "u" else _int_to_uint16(arr, path)


def _int_to_uint16(arr: NDArray[Any], path: Path) -> NDArray[np.uint16]:
    if arr.size and (arr.min() < 0 or arr.max() > 0xFFFF):
        raise InputError(f"{path}: PNG values outside 0..65535; expected 16-bit radiometric counts")
    return arr.astype(np.uint16)
