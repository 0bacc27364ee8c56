"""Still-image preprocessing against the official ImageBind output (fixtures pre/vision.npy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.config_util import config_from_dict, config_to_dict
from runtime.errors import ConfigError, InputError
from runtime.preprocess.vision import (
    VisionPreprocess,
    load_image,
    load_images,
    preprocess_image,
    resized_size,
    to_clip,
)

Image = pytest.importorskip("PIL.Image")

IMAGES = ("image_rgb_320x240.png", "image_rgb_180x260.png")


@pytest.fixture(scope="module")
def image_paths(official_dir: Path) -> list[Path]:
    return [official_dir / "raw" / name for name in IMAGES]


def test_matches_official_vision(image_paths: list[Path], official_dir: Path) -> None:
    golden = np.load(official_dir / "pre" / "vision.npy")
    batch = load_images(image_paths)
    assert batch.dtype == np.float32 and batch.shape == (2, 3, 224, 224)
    # Measured: bit-exact (max abs 0.0) with Pillow 13; 1e-3 leaves room for other Pillow builds.
    assert np.abs(batch - golden).max() <= 1e-3


def test_resize_and_crop_geometry() -> None:
    assert resized_size(320, 240, 224) == (298, 224)
    assert resized_size(180, 260, 224) == (224, 323)
    assert resized_size(224, 224, 224) == (224, 224)


def test_array_input_equals_pil_input(image_paths: list[Path]) -> None:
    image = load_image(image_paths[0])
    from_array = preprocess_image(np.asarray(image))
    np.testing.assert_array_equal(from_array, preprocess_image(image))
    with pytest.raises(InputError, match="uint8"):
        preprocess_image(np.zeros((10, 10, 3), dtype=np.float32))
    with pytest.raises(InputError, match="uint8"):
        preprocess_image(np.zeros((10, 10), dtype=np.uint8))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA"])
def test_other_modes_convert_to_rgb(tmp_path: Path, image_paths: list[Path], mode: str) -> None:
    source = load_image(image_paths[1])
    converted = source.convert(mode)
    path = tmp_path / f"img_{mode}.png"
    converted.save(path)
    expected = preprocess_image(np.asarray(converted.convert("RGB")))
    np.testing.assert_array_equal(load_images([path])[0], expected)
    np.testing.assert_array_equal(preprocess_image(converted), expected)
    if mode == "L":  # gray replicated to three equal channels before normalisation
        cfg = VisionPreprocess()
        pixels = expected * np.array(cfg.std)[:, None, None] + np.array(cfg.mean)[:, None, None]
        np.testing.assert_allclose(pixels[1], pixels[0], atol=1e-6)
        np.testing.assert_allclose(pixels[2], pixels[0], atol=1e-6)


def test_truncated_png_names_file(tmp_path: Path, image_paths: list[Path]) -> None:
    data = image_paths[0].read_bytes()
    broken = tmp_path / "broken.png"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"broken\.png"):
        load_image(broken)
    with pytest.raises(InputError, match=r"broken\.png"):
        load_images([image_paths[0], broken])


def test_corrupt_png_body(tmp_path: Path, image_paths: list[Path]) -> None:
    data = bytearray(image_paths[0].read_bytes())
    data[200:400] = bytes(200)  # zero part of the compressed image data
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"corrupt\.png"):
        load_image(corrupt)


def test_non_image_and_missing(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    with pytest.raises(InputError, match=r"notes\.png: not an image"):
        load_image(text)
    with pytest.raises(InputError, match=r"absent\.jpg: no such"):
        load_image(tmp_path / "absent.jpg")
    with pytest.raises(InputError, match="is a directory"):
        load_image(tmp_path)
    with pytest.raises(InputError, match="no image paths"):
        load_images([])


def test_to_clip_repeats_frame(image_paths: list[Path]) -> None:
    batch = load_images(image_paths)
    clip = to_clip(batch[0])
    assert clip.shape == (3, 2, 224, 224) and clip.dtype == np.float32
    np.testing.assert_array_equal(clip[:, 0], batch[0])
    np.testing.assert_array_equal(clip[:, 1], batch[0])
    clips = to_clip(batch)
    assert clips.shape == (2, 3, 2, 224, 224)
    np.testing.assert_array_equal(clips[1, :, 1], batch[1])
    with pytest.raises(InputError):
        to_clip(np.zeros((224, 224), dtype=np.float32))


def test_config_roundtrip_and_validation() -> None:
    cfg = VisionPreprocess()
    assert config_from_dict(VisionPreprocess, config_to_dict(cfg)) == cfg
    assert config_to_dict(cfg)["mean"] == [0.48145466, 0.4578275, 0.40821073]
    with pytest.raises(ConfigError):
        VisionPreprocess(crop="random")
    with pytest.raises(ConfigError):
        VisionPreprocess(std=(0.2, 0.0, 0.2))
    with pytest.raises(ConfigError):
        config_from_dict(VisionPreprocess, {"resize": "lanczos"})
