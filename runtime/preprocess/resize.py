"""Torch-free resizing and cropping of single-channel images (depth, thermal).

Two separable resamplers, both applied as a gather of a few taps per output
pixel along one axis at a time (no dense matrices, no Python loops over pixels):

* :func:`resize_bilinear` has the semantics of
  ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False,
  antialias=False)``: source coordinate ``(dst + 0.5) * in / out - 0.5``,
  clamped at 0, two taps, no low-pass filter when shrinking.
* :func:`resize_bicubic_pil` has the semantics of Pillow's ``Image.resize(...,
  BICUBIC)`` on a float ("F" mode) image: the a = -0.5 cubic kernel, widened by
  the scale factor when shrinking (antialiased), weights normalised to sum 1,
  horizontal pass first with a float32 intermediate (recent Pillow versions may
  run the vertical pass first; for float images that changes only rounding).
  Pillow's 8-bit path rounds between passes and is not reproduced here.

:func:`short_side_size` and :func:`center_crop` follow torchvision's
``Resize(size)`` and ``CenterCrop(size)``.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from runtime.errors import InputError

_BICUBIC_A = -0.5  # Pillow's cubic convolution parameter
_BICUBIC_SUPPORT = 2.0  # kernel radius in source pixels before widening


def short_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    """Output (height, width) of torchvision ``Resize(size)``: short side -> ``size``.

    The long side is ``int(size * long / short)`` (truncated), e.g. 240x320 -> 224x298.

    Args:
        h: input height in pixels (>= 1).
        w: input width in pixels (>= 1).
        size: target length of the short side in pixels.

    Returns:
        (new_h, new_w) in pixels.
    """
    if h < 1 or w < 1 or size < 1:
        raise InputError(f"resize: image {h}x{w} to short side {size}: sizes must be positive")
    if h <= w:
        return size, int(size * w / h)
    return int(size * h / w), size


def center_crop(img: NDArray[np.floating], size: int) -> NDArray[np.floating]:
    """Crop the central ``size`` x ``size`` window of the last two axes (torchvision ``CenterCrop``).

    Offsets are ``int(round((dim - size) / 2))`` (Python's round half to even).

    Args:
        img: array (..., H, W) with H, W >= ``size``.
        size: side of the square crop in pixels.

    Returns:
        A view (..., size, size) of ``img``; copy it before writing.

    Raises:
        InputError: the image is smaller than the crop.
    """
    h, w = img.shape[-2], img.shape[-1]
    if h < size or w < size:
        raise InputError(f"center_crop: image {h}x{w} is smaller than the {size}x{size} crop")
    top = round((h - size) / 2.0)
    left = round((w - size) / 2.0)
    return img[..., top : top + size, left : left + size]


def resize_bilinear(img: NDArray[np.floating], out_h: int, out_w: int) -> NDArray[np.float32]:
    """Bilinear resize with torch ``interpolate(align_corners=False, antialias=False)`` semantics.

    Args:
        img: float array (H, W) or (..., H, W); any unit (it is not rescaled).
        out_h: output height in pixels.
        out_w: output width in pixels.

    Returns:
        float32 array (..., out_h, out_w); ``img`` is not modified.
    """
    _check_resize(img, out_h, out_w, "resize_bilinear")
    x = np.asarray(img, dtype=np.float64)
    x = _apply_taps(x, -1, *_bilinear_taps(x.shape[-1], out_w))
    x = _apply_taps(x, -2, *_bilinear_taps(x.shape[-2], out_h))
    return x.astype(np.float32)


def resize_bicubic_pil(img: NDArray[np.floating], out_h: int, out_w: int) -> NDArray[np.float32]:
    """Bicubic resize with Pillow ``Image.resize(BICUBIC)`` semantics on a float ("F") image.

    No clipping is applied: the cubic kernel can overshoot the input range at edges.

    Args:
        img: float array (H, W) or (..., H, W); any unit.
        out_h: output height in pixels.
        out_w: output width in pixels.

    Returns:
        float32 array (..., out_h, out_w); ``img`` is not modified.
    """
    _check_resize(img, out_h, out_w, "resize_bicubic_pil")
    x = np.asarray(img, dtype=np.float64)
    # Pillow runs the horizontal pass first and stores a float32 intermediate.
    x = _apply_taps(x, -1, *_pil_bicubic_taps(x.shape[-1], out_w)).astype(np.float32)
    x = _apply_taps(x.astype(np.float64), -2, *_pil_bicubic_taps(x.shape[-2], out_h))
    return x.astype(np.float32)


def _check_resize(img: NDArray[np.floating], out_h: int, out_w: int, who: str) -> None:
    if img.ndim < 2 or img.shape[-1] < 1 or img.shape[-2] < 1:
        raise InputError(f"{who}: expected an array (..., H, W) with H, W >= 1, got shape {img.shape}")
    if out_h < 1 or out_w < 1:
        raise InputError(f"{who}: output size {out_h}x{out_w} must be positive")


def _apply_taps(x: NDArray[np.float64], axis: int, idx: NDArray[np.intp], w: NDArray[np.float64]) -> NDArray:
    """Weighted sum of ``k`` gathered source samples per output sample along ``axis``.

    ``idx`` and ``w`` are (out, k): output ``o`` is ``sum_j w[o, j] * x[idx[o, j]]``.
    """
    moved = np.moveaxis(x, axis, -1)
    out = np.einsum("...ok,ok->...o", moved[..., idx], w)
    return np.moveaxis(out, -1, axis)


def _bilinear_taps(n_in: int, n_out: int) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Two taps per output pixel, as ATen's ``upsample_bilinear2d`` (align_corners=False).

    ATen (float32 tensors) uses a float32 scale, a fused multiply-add for the
    source coordinate and float32 weights; doing the same makes the result agree
    to float rounding rather than to ~1e-4.
    """
    f32 = np.float32
    scale = np.float64(f32(n_in / n_out))  # float32 scale, then a fused multiply-add rounded once
    src = ((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5).astype(f32)
    src = np.maximum(src, f32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.intp), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = np.clip(src - i0.astype(f32), f32(0.0), f32(1.0))
    w = np.stack([f32(1.0) - lam, lam], axis=1)
    return np.stack([i0, i1], axis=1), w.astype(np.float64)


def _cubic(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Pillow's bicubic kernel (a = -0.5), support 2."""
    a = _BICUBIC_A
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _pil_bicubic_taps(n_in: int, n_out: int) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Taps of Pillow's ``precompute_coeffs`` for the bicubic filter (zero-weight padding)."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = _BICUBIC_SUPPORT * filterscale
    ksize = math.ceil(support) * 2 + 1
    center = (np.arange(n_out, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum((center - support + 0.5).astype(np.intp), 0)  # C cast truncates toward zero
    xmax = np.minimum((center + support + 0.5).astype(np.intp), n_in)
    pos = xmin[:, None] + np.arange(ksize)[None, :]
    valid = pos < xmax[:, None]
    w = np.where(valid, _cubic((pos - center[:, None] + 0.5) / filterscale), 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total != 0.0)
    return np.minimum(pos, n_in - 1), w
