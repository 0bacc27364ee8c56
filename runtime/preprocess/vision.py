"""Still-image preprocessing for the ImageBind vision encoder, without torch.

Reproduces the official pipeline (fact sheet §5.1): decode with Pillow and
convert to RGB, resize the short side to 224 with Pillow's bicubic filter (long
side ``int(224 * long / short)``, as torchvision ``Resize(224)`` on a PIL image),
centre-crop 224 x 224 (offsets rounded with Python's ``round``), scale to [0, 1]
and normalise with the CLIP mean and std. :func:`to_clip` then repeats the frame
to the 2-frame clip the vision graph takes (fact sheet §6).

Pillow is imported inside the functions that need it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.errors import ConfigError, InputError
from runtime.fileio import import_extra

# A ``PIL.Image.Image``; typed loosely so Pillow is not imported at module level.
PilImage = Any

_RESAMPLE = {"bicubic": "BICUBIC", "bilinear": "BILINEAR", "nearest": "NEAREST"}
_CROPS = ("center",)


@dataclass(frozen=True)
class VisionPreprocess:
    """Every constant of the still-image pipeline; the defaults are the official ones.

    Attributes:
        size: output side in pixels; the short side is resized to it, then centre-cropped.
        resize: Pillow resampling filter: "bicubic" (official), "bilinear" or "nearest".
        crop: crop placement; only "center" (official).
        mean: per-channel RGB mean subtracted after scaling to [0, 1].
        std: per-channel RGB std divided after subtracting ``mean``.
        frames: frames per clip; a still image is repeated this many times (2).
    """

    size: int = 224
    resize: str = "bicubic"
    crop: str = "center"
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    frames: int = 2

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ConfigError(f"VisionPreprocess.size: must be positive, got {self.size}")
        if self.resize not in _RESAMPLE:
            raise ConfigError(f"VisionPreprocess.resize: {self.resize!r} not in {sorted(_RESAMPLE)}")
        if self.crop not in _CROPS:
            raise ConfigError(f"VisionPreprocess.crop: {self.crop!r} not in {list(_CROPS)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("VisionPreprocess: mean and std need 3 values each, std > 0")
        if self.frames < 1:
            raise ConfigError(f"VisionPreprocess.frames: must be positive, got {self.frames}")


def load_image(path: str | Path) -> PilImage:
    """Decode an image file fully and convert it to RGB.

    Args:
        path: any format Pillow reads (PNG, JPEG, ...); grayscale, RGBA and
            palette images are converted with ``convert("RGB")`` like the official code.

    Returns:
        A ``PIL.Image.Image`` in mode "RGB", detached from the file.

    Raises:
        InputError: the file is missing, not an image, truncated or corrupt.
    """
    image_module = import_extra("PIL.Image", "image decoding")
    path = Path(path)
    try:
        with image_module.open(path) as image:
            image.load()  # force a full decode so truncation is caught here
            return image.convert("RGB")
    except FileNotFoundError:
        raise InputError(f"{path}: no such image file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not an image file") from None
    except image_module.UnidentifiedImageError:
        raise InputError(f"{path}: not an image file Pillow can read") from None
    except image_module.DecompressionBombError as exc:
        raise InputError(f"{path}: image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: truncated or corrupt image ({exc})") from None


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Output (width, height) of torchvision ``Resize(size)``: short side -> ``size``, long side truncated."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def preprocess_image(image: PilImage | NDArray[np.uint8], cfg: VisionPreprocess | None = None) -> NDArray[np.float32]:
    """Resize, centre-crop and normalise one image.

    Args:
        image: a PIL image (any mode; converted to RGB) or a uint8 array (H, W, 3) in RGB order.
        cfg: pipeline constants; None uses the official defaults.

    Returns:
        float32 array (3, size, size), channel-first RGB, ``(pixel / 255 - mean) / std``.

    Raises:
        InputError: the array is not uint8 (H, W, 3) or the image is empty.
    """
    cfg = cfg or VisionPreprocess()
    image_module = import_extra("PIL.Image", "image decoding")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"image array: expected uint8 (H, W, 3), got {image.dtype} {image.shape}")
        image = image_module.fromarray(np.ascontiguousarray(image))
    elif image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    if width < 1 or height < 1:
        raise InputError(f"image: empty ({width}x{height})")
    new_w, new_h = resized_size(width, height, cfg.size)
    resample = getattr(image_module.Resampling, _RESAMPLE[cfg.resize])
    pixels = np.asarray(image.resize((new_w, new_h), resample), dtype=np.uint8)
    top = round((new_h - cfg.size) / 2.0)  # Python round, as torchvision CenterCrop
    left = round((new_w - cfg.size) / 2.0)
    crop = pixels[top : top + cfg.size, left : left + cfg.size]
    scaled = crop.astype(np.float32).transpose(2, 0, 1) / np.float32(255.0)
    mean = np.asarray(cfg.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(cfg.std, dtype=np.float32).reshape(3, 1, 1)
    return np.ascontiguousarray((scaled - mean) / std, dtype=np.float32)


def load_images(paths: Sequence[str | Path], cfg: VisionPreprocess | None = None) -> NDArray[np.float32]:
    """Load and preprocess image files into a batch.

    Args:
        paths: N image files.
        cfg: pipeline constants; None uses the official defaults.

    Returns:
        float32 array (N, 3, size, size).

    Raises:
        InputError: ``paths`` is empty or a file cannot be decoded.
    """
    if isinstance(paths, (str, Path)):
        raise InputError("load_images() takes a list of paths, got a single path")
    if not paths:
        raise InputError("load_images(): no image paths given")
    cfg = cfg or VisionPreprocess()
    return np.stack([preprocess_image(load_image(p), cfg) for p in paths])


def to_clip(x: NDArray[np.float32], frames: int = 2) -> NDArray[np.float32]:
    """Repeat still images along a new time axis (the official image -> video padding).

    Args:
        x: float array (3, H, W) or a batch (N, 3, H, W).
        frames: clip length T; the ImageBind vision graph takes T = 2.

    Returns:
        Array (3, T, H, W) or (N, 3, T, H, W), same dtype, every frame equal to ``x``.

    Raises:
        InputError: ``x`` is not 3-D or 4-D with 3 channels.
    """
    x = np.asarray(x)
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise InputError(f"to_clip: expected (3, H, W) or (N, 3, H, W), got {x.shape}")
    return np.repeat(np.expand_dims(x, axis=-3), frames, axis=-3)
