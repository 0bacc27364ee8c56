"""Depth maps in metres to ImageBind depth-encoder inputs (1, 224, 224), without torch.

ImageBind publishes no depth loader (fact sheet §5.5). The paper only says depth
is converted to *disparity* following Omnivore. The defaults here are the
best-supported candidate, the Omnivore pipeline:

1. invalid pixels (<= 0, NaN, inf) are counted and set to ``invalid_depth_m``
   (default 0.01 m = ``min_depth_m``, which is what Omnivore's clip does to a 0);
2. depth is clipped to [0.01, 50] m and turned into disparity
   ``baseline_m * focal_px / depth_m`` (pixels); baseline 0.075 m for Kinect
   v1/v2, 0.095 m for RealSense / Xtion, fx from the camera intrinsics (default
   518.858 px, the NYU Depth v2 Kinect colour camera to which its depth is registered);
3. Omnivore ``DepthNorm(max_depth=75, clamp_max_before_scale=True)``: clamp to
   [0.01, 75] and divide by 75;
4. resize the short side to 224 (bilinear, torch semantics, long side truncated
   as torchvision ``Resize``), centre-crop 224 (torchvision offsets);
5. normalise with Omnivore's depth statistics, mean 0.0418, std 0.0295.

Alternatives, all plain config fields: ``representation="inverse"`` (1/depth,
the parity fixture) or ``"depth"`` (metres); ``depth_norm=False``;
``normalization="per_image"`` (standardise each frame) or ``"none"``.

**The ~8x SUN RGB-D ambiguity.** SUN RGB-D depth PNGs store millimetres rotated
right by 3 bits. The Omnivore snippet divides the raw PNG value by 1000 without
undoing the rotation, so its "metres" are ~8x the true depth and its
disparities ~1/8 of physical ones; ImageBind issue #134 decodes the rotation
instead. Which one ImageBind trained with is unknown. ``png_decode="plain"``
(default) reads PNGs as ``value * depth_scale_m`` (right for RealSense, Kinect
SDK and this project's fixtures, and what the Omnivore snippet did to SUN RGB-D
files); ``png_decode="sunrgbd"`` undoes the 3-bit rotation first (physically
correct SUN RGB-D metres). Choose by zero-shot accuracy on your data.

Pillow is imported inside :func:`read_depth_m` and only for PNG files.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from runtime.config_util import DictConfig, check_choices, check_positive
from runtime.errors import ConfigError, InputError
from runtime.fileio import import_extra, read_npy
from runtime.preprocess.resize import center_crop, resize_bilinear

_REPRESENTATIONS = ("disparity", "inverse", "depth")
_RESIZES = ("bilinear",)
_NORMALIZATIONS = ("fixed", "per_image", "none")
_ROUNDINGS = ("floor", "round")
_PNG_DECODES = ("plain", "sunrgbd")


@dataclass(frozen=True)
class DepthPreprocess(DictConfig):
    """Every constant of the depth pipeline; the defaults are the Omnivore candidate (§5.5).

    Attributes:
        representation: "disparity" (``baseline_m * focal_px / depth_m``, pixels),
            "inverse" (``1 / depth_m``, 1/m) or "depth" (metres).
        baseline_m: stereo / projector baseline in metres (Kinect 0.075, RealSense 0.095).
        focal_px: horizontal focal length fx in pixels of the depth-registered camera.
        min_depth_m: valid depths are clipped to at least this (metres).
        max_depth_m: valid depths are clipped to at most this (metres).
        invalid_depth_m: depth assigned to invalid pixels (<= 0, NaN, inf) before clipping.
        allow_nonfinite: NaN / inf pixels count as invalid; False makes them an InputError.
        max_invalid_fraction: an InputError when at least this fraction of pixels is invalid
            (1.0: only an all-invalid frame is rejected).
        depth_norm: apply Omnivore's DepthNorm (clamp, then divide by ``depth_norm_max``).
        depth_norm_min: lower clamp of DepthNorm, in the representation's unit.
        depth_norm_max: upper clamp and divisor of DepthNorm, in the representation's unit.
        resize: interpolation of the short-side resize; only "bilinear" (torch semantics).
        size: output side in pixels (the encoder takes 224).
        long_side: long side after resizing: "floor" (``int(size * long / short)``,
            torchvision) or "round".
        crop_offset: centre-crop offset: "round" (``round((dim - size) / 2)``,
            torchvision) or "floor" (``(dim - size) // 2``).
        normalization: "fixed" (``(x - mean) / std``), "per_image" (standardise
            each frame, population std) or "none".
        mean: "fixed" normalisation mean (after DepthNorm).
        std: "fixed" normalisation std.
        std_eps: lower bound of the per-image std (a constant frame becomes zeros).
        depth_scale_m: metres per unit of integer files (16-bit PNG / integer .npy); 0.001 = mm.
        png_decode: "plain" (``value * depth_scale_m``) or "sunrgbd" (undo the 3-bit
            right rotation of SUN RGB-D PNGs first).
    """

    representation: str = "disparity"
    baseline_m: float = 0.075
    focal_px: float = 518.857901
    min_depth_m: float = 0.01
    max_depth_m: float = 50.0
    invalid_depth_m: float = 0.01
    allow_nonfinite: bool = True
    max_invalid_fraction: float = 1.0
    depth_norm: bool = True
    depth_norm_min: float = 0.01
    depth_norm_max: float = 75.0
    resize: str = "bilinear"
    size: int = 224
    long_side: str = "floor"
    crop_offset: str = "round"
    normalization: str = "fixed"
    mean: float = 0.0418
    std: float = 0.0295
    std_eps: float = 1e-6
    depth_scale_m: float = 0.001
    png_decode: str = "plain"

    def __post_init__(self) -> None:
        check_choices(
            self,
            {
                "representation": _REPRESENTATIONS,
                "resize": _RESIZES,
                "normalization": _NORMALIZATIONS,
                "long_side": _ROUNDINGS,
                "crop_offset": _ROUNDINGS,
                "png_decode": _PNG_DECODES,
            },
        )
        check_positive(
            self, ("baseline_m", "focal_px", "min_depth_m", "std", "std_eps", "depth_scale_m", "depth_norm_max", "size")
        )
        if not self.min_depth_m < self.max_depth_m:
            raise ConfigError("DepthPreprocess: min_depth_m must be below max_depth_m")
        if not self.depth_norm_min < self.depth_norm_max:
            raise ConfigError("DepthPreprocess: depth_norm_min must be below depth_norm_max")
        if not 0.0 < self.max_invalid_fraction <= 1.0:
            raise ConfigError("DepthPreprocess.max_invalid_fraction: must be in (0, 1]")

    @classmethod
    def omnivore(cls) -> DepthPreprocess:
        """The Omnivore candidate (the defaults). Use ``dataclasses.replace`` for another camera."""
        return cls()

    @classmethod
    def realsense(cls, focal_px: float) -> DepthPreprocess:
        """The Omnivore candidate with the RealSense / Xtion baseline (0.095 m) and ``focal_px``."""
        return dataclasses.replace(cls(), baseline_m=0.095, focal_px=focal_px)

    @classmethod
    def fixture(cls) -> DepthPreprocess:
        """The recipe of the parity fixture ``inputs/depth.npy``.

        ``1 / depth_m``, bilinear resize to 224 x round(224 * long / short), crop
        offset ``(dim - 224) // 2``, per-image standardisation.
        """
        return cls(
            representation="inverse",
            depth_norm=False,
            long_side="round",
            crop_offset="floor",
            normalization="per_image",
        )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one model input: ``(1, size, size)``."""
        return (1, self.size, self.size)


@dataclass(frozen=True)
class DepthStats:
    """What the pipeline did to one frame (pixel counts of the input frame)."""

    total_pixels: int
    invalid_pixels: int
    clipped_pixels: int


def preprocess_depth(
    depth_m: NDArray[np.floating], cfg: DepthPreprocess | None = None, name: str = "depth"
) -> NDArray[np.float32]:
    """Turn one depth map in metres into a depth-encoder input.

    Args:
        depth_m: float array (H, W), metres; 0, negative, NaN and inf mark invalid pixels.
        cfg: pipeline constants; None uses the Omnivore defaults.
        name: how the array is named in error messages (e.g. its file).

    Returns:
        float32 array (1, size, size); ``depth_m`` is not modified.

    Raises:
        InputError: not 2-D, non-finite pixels when not allowed, or too many invalid pixels.
    """
    return preprocess_depth_with_stats(depth_m, cfg, name)[0]


def preprocess_depth_with_stats(
    depth_m: NDArray[np.floating], cfg: DepthPreprocess | None = None, name: str = "depth"
) -> tuple[NDArray[np.float32], DepthStats]:
    """:func:`preprocess_depth` that also reports invalid and clipped pixel counts."""
    cfg = cfg or DepthPreprocess()
    depth, stats = _clean_depth(depth_m, cfg, name)
    values = _represent(depth, cfg)
    if cfg.depth_norm:
        values = np.clip(values, cfg.depth_norm_min, cfg.depth_norm_max) / cfg.depth_norm_max
    h, w = values.shape
    out_h, out_w = _resized_hw(h, w, cfg)
    resized = resize_bilinear(values, out_h, out_w)
    crop = _crop(resized, cfg.size, cfg.crop_offset)
    out = _normalize(crop.astype(np.float64), cfg)
    return out.astype(np.float32)[None], stats


def _clean_depth(
    depth_m: NDArray[np.floating], cfg: DepthPreprocess, name: str
) -> tuple[NDArray[np.float64], DepthStats]:
    """Validate, fill invalid pixels and clip; returns a new float64 (H, W) array in metres."""
    arr = np.asarray(depth_m)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"{name}: expected a depth map (H, W), got shape {arr.shape}; pass one frame at a time")
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{name}: expected a numeric depth map in metres, got dtype {arr.dtype}")
    depth = arr.astype(np.float64)  # always a copy: the caller's array is never written
    finite = np.isfinite(depth)
    if not cfg.allow_nonfinite and not finite.all():
        raise InputError(f"{name}: {int((~finite).sum())} NaN/inf pixels; clean the map or set allow_nonfinite=true")
    invalid = ~finite | (depth <= 0.0)
    n_invalid = int(invalid.sum())
    if n_invalid >= cfg.max_invalid_fraction * depth.size:
        raise InputError(
            f"{name}: {n_invalid} of {depth.size} pixels are invalid (0, negative, NaN or inf); "
            "check the file's units and decoding"
        )
    depth[invalid] = cfg.invalid_depth_m
    clipped = ~invalid & ((depth < cfg.min_depth_m) | (depth > cfg.max_depth_m))
    depth = np.clip(depth, cfg.min_depth_m, cfg.max_depth_m)
    return depth, DepthStats(int(depth.size), n_invalid, int(clipped.sum()))


def _represent(depth_m: NDArray[np.float64], cfg: DepthPreprocess) -> NDArray[np.float64]:
    if cfg.representation == "disparity":
        return cfg.baseline_m * cfg.focal_px / depth_m
    if cfg.representation == "inverse":
        return 1.0 / depth_m
    return depth_m


def _resized_hw(h: int, w: int, cfg: DepthPreprocess) -> tuple[int, int]:
    """(height, width) after resizing the short side to ``cfg.size``."""
    short, long = (h, w) if h <= w else (w, h)
    exact = cfg.size * long / short
    new_long = int(exact) if cfg.long_side == "floor" else round(exact)
    return (cfg.size, new_long) if h <= w else (new_long, cfg.size)


def _crop(img: NDArray[np.float32], size: int, offset: str) -> NDArray[np.float32]:
    if offset == "round":
        return center_crop(img, size)
    top = (img.shape[-2] - size) // 2
    left = (img.shape[-1] - size) // 2
    return img[..., top : top + size, left : left + size]


def _normalize(x: NDArray[np.float64], cfg: DepthPreprocess) -> NDArray[np.float64]:
    if cfg.normalization == "fixed":
        return (x - cfg.mean) / cfg.std
    if cfg.normalization == "per_image":
        return (x - x.mean()) / max(float(x.std()), cfg.std_eps)
    return x


def load_depth(path: str | Path, cfg_or_scale: DepthPreprocess | float | None = None) -> NDArray[np.float32]:
    """Read a depth file and preprocess it into a depth-encoder input.

    Args:
        path: a 16-bit grayscale PNG (integer units, ``depth_scale_m`` metres each, 0 =
            invalid) or a .npy (H, W): float = metres, integer = units of ``depth_scale_m``.
        cfg_or_scale: pipeline constants, or just a ``depth_scale_m`` for the default
            pipeline; None uses the Omnivore defaults with millimetre PNGs.

    Returns:
        float32 array (1, size, size).

    Raises:
        InputError: missing, truncated or malformed file, or an unusable depth map.
    """
    if isinstance(cfg_or_scale, DepthPreprocess):
        cfg = cfg_or_scale
    elif cfg_or_scale is None:
        cfg = DepthPreprocess()
    else:
        try:
            cfg = DepthPreprocess(depth_scale_m=float(cfg_or_scale))
        except ConfigError as exc:
            raise InputError(f"{path}: {exc}") from None
    return preprocess_depth(read_depth_m(path, cfg), cfg, name=str(path))


def read_depth_m(path: str | Path, cfg: DepthPreprocess | None = None) -> NDArray[np.float32]:
    """Decode a depth file into metres without any other processing.

    Args:
        path: .png (16-bit grayscale) or .npy (2-D), see :func:`load_depth`.
        cfg: supplies ``depth_scale_m`` and ``png_decode``; None uses millimetres.

    Returns:
        float32 array (H, W) in metres; invalid pixels stay 0 / NaN / inf.

    Raises:
        InputError: the file is missing, truncated, not 2-D or of an unsupported type.
    """
    cfg = cfg or DepthPreprocess()
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        raw = read_npy(path)
    elif suffix == ".png":
        raw = _read_png16(path)
        if cfg.png_decode == "sunrgbd":
            raw = (raw >> 3) | (raw << 13)  # undo the 3-bit right rotation of the toolbox
    else:
        raise InputError(f"{path}: unsupported depth file type {suffix!r}; use a 16-bit .png or a .npy")
    if raw.ndim != 2:
        raise InputError(f"{path}: expected a depth map (H, W), got shape {raw.shape}")
    if raw.dtype.kind == "f":
        return raw.astype(np.float32)
    if raw.dtype.kind in "iu":
        return (raw.astype(np.float64) * cfg.depth_scale_m).astype(np.float32)
    raise InputError(f"{path}: depth array has dtype {raw.dtype}; expected float metres or integer units")


def _read_png16(path: Path) -> NDArray[np.uint16]:
    image_module = import_extra("PIL.Image", "PNG decoding")
    try:
        with image_module.open(path) as image:
            image.load()
            mode = image.mode
            arr = np.asarray(image)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except image_module.UnidentifiedImageError:
        raise InputError(f"{path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: truncated or corrupt PNG ({exc})") from None
    if mode not in ("I;16", "I;16B", "I;16L", "I") or arr.ndim != 2:
        raise InputError(f"{path}: PNG mode {mode!r}; a depth PNG must be 16-bit single-channel")
    if arr.dtype.kind == "i" and arr.size and (arr.min() < 0 or arr.max() > 0xFFFF):
        raise InputError(f"{path}: PNG values outside 0..65535; expected 16-bit depth")
    return arr.astype(np.uint16)
