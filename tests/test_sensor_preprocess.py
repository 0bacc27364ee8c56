"""Depth, thermal and IMU preprocessing: fixture recipes, physical units, resizing and errors.

numpy-only except the torch comparison (skipped without torch) and tests that
decode PNG files or resize 8-bit images (they need Pillow).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runtime.errors import ConfigError, InputError
from runtime.preprocess.depth import (
    DepthPreprocess,
    load_depth,
    preprocess_depth,
    preprocess_depth_with_stats,
    read_depth_m,
)
from runtime.preprocess.imu import ImuPreprocess, load_imu, preprocess_imu
from runtime.preprocess.resize import center_crop, resize_bicubic_pil, resize_bilinear, short_side_size
from runtime.preprocess.thermal import (
    ThermalPreprocess,
    load_thermal,
    preprocess_thermal,
    preprocess_thermal_with_info,
)

DEPTH_FILES = ("depth_m.npy", "depth2_m.npy")
THERMAL_FILES = ("thermal_8bit.png", "thermal2_8bit.png")
IMU_FILES = ("imu_6x2000.npy", "imu2_6x2000.npy")


@pytest.fixture(scope="module")
def raw(official_dir: Path) -> Path:
    return official_dir / "raw"


@pytest.fixture(scope="module")
def golden(official_dir: Path) -> dict[str, np.ndarray]:
    return {m: np.load(official_dir / "inputs" / f"{m}.npy") for m in ("depth", "thermal", "imu")}


# --------------------------------------------------------------------------- fixture recipes


def test_depth_fixture_recipe(raw: Path, golden: dict[str, np.ndarray]) -> None:
    for row, name in enumerate(DEPTH_FILES):
        depth_m = np.load(raw / name)
        before = depth_m.copy()
        out = preprocess_depth(depth_m, DepthPreprocess.fixture())
        assert out.shape == (1, 224, 224) and out.dtype == np.float32
        # Measured: 1.5e-5 (row 0) and 2.4e-6 (row 1); torch's own float32 pipeline is 1.5e-5 off too.
        assert np.abs(out - golden["depth"][row]).max() <= 1e-4
        np.testing.assert_array_equal(depth_m, before)


def test_thermal_fixture_recipe(raw: Path, golden: dict[str, np.ndarray]) -> None:
    pytest.importorskip("PIL.Image")
    for row, name in enumerate(THERMAL_FILES):
        out = load_thermal(raw / name, ThermalPreprocess.fixture())
        assert out.shape == (1, 224, 224) and out.dtype == np.float32
        # Measured: 4.8e-7 (Pillow 13).
        assert np.abs(out - golden["thermal"][row]).max() <= 1e-3


def test_imu_fixture_recipe(raw: Path, golden: dict[str, np.ndarray]) -> None:
    for row, name in enumerate(IMU_FILES):
        out = load_imu(raw / name, None, ImuPreprocess.fixture())  # (6, 2000) file, layout auto
        assert out.shape == (6, 2000) and out.dtype == np.float32
        # Measured: 4.8e-7.
        assert np.abs(out - golden["imu"][row]).max() <= 1e-4
        samples = np.load(raw / name).T  # time-major (N, 6)
        np.testing.assert_allclose(preprocess_imu(samples, 200.0, ImuPreprocess.fixture()), out, atol=1e-6)


# --------------------------------------------------------------------------- resize


def test_resize_bilinear_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for h, w, out_h, out_w in [(240, 320, 224, 298), (17, 9, 40, 3), (5, 5, 5, 5), (100, 60, 7, 230), (1, 8, 3, 4)]:
        img = rng.standard_normal((h, w)).astype(np.float32)
        ref = torch.nn.functional.interpolate(
            torch.from_numpy(img)[None, None], size=(out_h, out_w), mode="bilinear", align_corners=False
        )[0, 0].numpy()
        assert np.abs(resize_bilinear(img, out_h, out_w) - ref).max() <= 1e-6


def test_resize_bicubic_matches_pillow_float() -> None:
    image_module = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(1)
    for h, w, out_h, out_w in [(240, 320, 224, 298), (17, 9, 40, 3), (120, 160, 224, 298), (512, 640, 224, 280)]:
        img = rng.standard_normal((h, w)).astype(np.float32)
        ref = np.asarray(image_module.fromarray(img, mode="F").resize((out_w, out_h), image_module.Resampling.BICUBIC))
        assert np.abs(resize_bicubic_pil(img, out_h, out_w) - ref).max() <= 1e-5


def test_resize_keeps_constants_and_input() -> None:
    img = np.full((30, 40), 3.5, dtype=np.float32)
    np.testing.assert_allclose(resize_bilinear(img, 224, 298), 3.5, rtol=1e-6)
    np.testing.assert_allclose(resize_bicubic_pil(img, 7, 9), 3.5, rtol=1e-6)
    np.testing.assert_array_equal(img, 3.5)


def test_short_side_and_center_crop() -> None:
    assert short_side_size(240, 320, 224) == (224, 298)
    assert short_side_size(260, 180, 224) == (323, 224)
    img = np.arange(224 * 323, dtype=np.float32).reshape(323, 224)
    crop = center_crop(img, 224)
    assert crop.shape == (224, 224) and crop[0, 0] == img[50, 0]  # round(49.5) = 50
    with pytest.raises(InputError, match="smaller than"):
        center_crop(img, 400)
    with pytest.raises(InputError, match="positive"):
        resize_bilinear(img, 0, 5)


# --------------------------------------------------------------------------- depth


def test_depth_png_mm_equals_npy_m(raw: Path) -> None:
    pytest.importorskip("PIL.Image")
    from_png = read_depth_m(raw / "depth_mm.png")
    from_npy = np.load(raw / "depth_m.npy")
    assert np.abs(from_png - from_npy).max() <= 0.0005 + 1e-6  # mm quantisation
    for cfg in (DepthPreprocess(), DepthPreprocess.fixture()):
        a = load_depth(raw / "depth_mm.png", cfg)
        b = load_depth(raw / "depth_m.npy", cfg)
        assert np.abs(a - b).max() <= 1e-3


def test_depth_scale_argument(tmp_path: Path) -> None:
    depth_cm = np.full((30, 40), 250, dtype=np.uint16)  # 2.5 m in centimetres
    np.save(tmp_path / "d.npy", depth_cm)
    out = load_depth(tmp_path / "d.npy", 0.01)
    cfg = DepthPreprocess(normalization="none", depth_norm=False)
    expected = preprocess_depth(np.full((30, 40), 2.5), cfg)
    np.testing.assert_allclose(
        load_depth(tmp_path / "d.npy", DepthPreprocess(normalization="none", depth_norm=False, depth_scale_m=0.01)),
        expected,
        rtol=1e-6,
    )
    assert out.shape == (1, 224, 224)


def test_depth_omnivore_values() -> None:
    cfg = DepthPreprocess(normalization="none")
    out = preprocess_depth(np.full((48, 64), 2.0, dtype=np.float32), cfg)
    disparity = 0.075 * 518.857901 / 2.0  # 19.46 px
    np.testing.assert_allclose(out, disparity / 75.0, rtol=1e-6)
    fixed = preprocess_depth(np.full((48, 64), 2.0), DepthPreprocess())
    np.testing.assert_allclose(fixed, (disparity / 75.0 - 0.0418) / 0.0295, rtol=1e-5)
    near = preprocess_depth(np.full((48, 64), 0.001), cfg)  # clipped to 0.01 m, then DepthNorm max 75
    np.testing.assert_allclose(near, 1.0, rtol=1e-6)
    as_depth = preprocess_depth(
        np.full((48, 64), 80.0), DepthPreprocess(representation="depth", depth_norm=False, normalization="none")
    )
    np.testing.assert_allclose(as_depth, 50.0, rtol=1e-6)  # max_depth_m clip


def test_depth_invalid_pixels_filled_and_counted() -> None:
    depth = np.full((40, 40), 2.0)
    depth[0, :4] = [0.0, np.nan, np.inf, -1.0]
    depth[1, 0] = 100.0
    before = depth.copy()
    cfg = DepthPreprocess(normalization="none", depth_norm=False, representation="depth", invalid_depth_m=7.0)
    out, stats = preprocess_depth_with_stats(depth, cfg)
    assert (stats.total_pixels, stats.invalid_pixels, stats.clipped_pixels) == (1600, 4, 1)
    assert np.isfinite(out).all() and out.max() > 2.0  # the 7 m fill shows through the resize
    np.testing.assert_array_equal(depth, before)


def test_depth_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"expected a depth map \(H, W\)"):
        preprocess_depth(np.ones((2, 30, 40)))
    with pytest.raises(InputError, match="invalid"):
        preprocess_depth(np.zeros((30, 40)))
    with pytest.raises(InputError, match="invalid"):
        preprocess_depth(np.full((30, 40), np.nan))
    nan_frame = np.ones((30, 40))
    nan_frame[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN/inf pixels"):
        preprocess_depth(nan_frame, DepthPreprocess(allow_nonfinite=False))
    half = np.ones((30, 40))
    half[:15] = 0.0
    with pytest.raises(InputError, match="invalid"):
        preprocess_depth(half, DepthPreprocess(max_invalid_fraction=0.5))
    with pytest.raises(InputError, match="no such file"):
        load_depth(tmp_path / "missing.npy")
    with pytest.raises(InputError, match="unsupported depth file type"):
        load_depth(tmp_path / "depth.txt")
    good = tmp_path / "good.npy"
    np.save(good, np.ones((30, 40), dtype=np.float32))
    (tmp_path / "cut.npy").write_bytes(good.read_bytes()[:200])
    with pytest.raises(InputError, match=r"not a readable \.npy"):
        load_depth(tmp_path / "cut.npy")
    np.save(tmp_path / "three.npy", np.ones((3, 30, 40), dtype=np.float32))
    with pytest.raises(InputError, match="expected a depth map"):
        load_depth(tmp_path / "three.npy")


def test_depth_png_errors(tmp_path: Path, raw: Path) -> None:
    image_module = pytest.importorskip("PIL.Image")
    data = (raw / "depth_mm.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.png.*(truncated|corrupt|not an image)"):
        load_depth(tmp_path / "cut.png")
    image_module.fromarray(np.full((30, 40), 9, dtype=np.uint8)).save(tmp_path / "eight.png")
    with pytest.raises(InputError, match="16-bit"):
        load_depth(tmp_path / "eight.png")
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(InputError, match=r"junk\.png"):
        load_depth(tmp_path / "junk.png")


def test_depth_sunrgbd_decode(tmp_path: Path) -> None:
    image_module = pytest.importorskip("PIL.Image")
    mm = np.array([[1000, 2500], [8000, 4321]], dtype=np.uint16)
    stored = ((mm << 3) | (mm >> 13)).astype(np.uint16)  # the toolbox's 3-bit left rotation
    image_module.fromarray(stored).save(tmp_path / "sun.png")
    plain = read_depth_m(tmp_path / "sun.png")
    decoded = read_depth_m(tmp_path / "sun.png", DepthPreprocess(png_decode="sunrgbd"))
    np.testing.assert_allclose(decoded, mm / 1000.0, rtol=1e-6)
    np.testing.assert_allclose(plain, stored / 1000.0, rtol=1e-6)  # the ~8x "Omnivore snippet" reading


# --------------------------------------------------------------------------- thermal


def test_thermal_radiometric_agrees_with_8bit(raw: Path) -> None:
    pytest.importorskip("PIL.Image")
    counts = np.load(raw / "thermal_raw16.npy")
    out, info = preprocess_thermal_with_info(counts)  # defaults: 280..320 K, no normalisation
    assert info.radiometric and 285.0 < info.min_k < info.max_k < 320.0
    eight_bit, info8 = preprocess_thermal_with_info(load_png_l(raw / "thermal_8bit.png"))
    assert not info8.radiometric and math.isnan(info8.min_k)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out - eight_bit).max() <= 2.5 / 255  # 8-bit quantisation and its rounding
    kelvin = counts.astype(np.float64) * 0.01
    np.testing.assert_allclose(preprocess_thermal(kelvin.astype(np.float32)), out, atol=1e-5)
    np.testing.assert_array_equal(counts, np.load(raw / "thermal_raw16.npy"))


def load_png_l(path: Path) -> np.ndarray:
    image_module = pytest.importorskip("PIL.Image")
    with image_module.open(path) as image:
        return np.asarray(image.convert("L"))


def test_thermal_mappings() -> None:
    kelvin = np.linspace(270.0, 330.0, 64 * 48).reshape(48, 64)
    cfg = ThermalPreprocess(resize="bilinear")
    out = preprocess_thermal(kelvin, cfg)
    assert out.min() == 0.0 and out.max() == 1.0  # clipped to the 280..320 K window
    per_image = preprocess_thermal(kelvin, ThermalPreprocess(range_mode="per_image", resize="bilinear"))
    assert per_image.min() < 0.05 and per_image.max() > 0.95
    std = preprocess_thermal(kelvin, ThermalPreprocess(normalization="per_image"))
    assert abs(float(std.mean())) < 1e-5 and abs(float(std.std()) - 1.0) < 1e-4
    fixed = preprocess_thermal(kelvin, ThermalPreprocess(normalization="fixed", resize="bilinear"))
    np.testing.assert_allclose(fixed, (out - 0.5) / 0.5, atol=1e-6)
    centi_celsius = np.full((48, 64), 3685, dtype=np.uint16)  # 36.85 C
    body = preprocess_thermal(centi_celsius, ThermalPreprocess(raw_offset_k=273.15, resize="bilinear"))
    np.testing.assert_allclose(body, (310.0 - 280.0) / 40.0, atol=1e-5)


def test_thermal_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"\(H, W\)"):
        preprocess_thermal(np.ones((3, 48, 64)))
    nan_frame = np.full((48, 64), 300.0)
    nan_frame[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN/inf"):
        preprocess_thermal(nan_frame)
    with pytest.raises(InputError, match="celsius"):
        preprocess_thermal(np.full((48, 64), 36.6))
    with pytest.raises(InputError, match="<= 0 K"):
        preprocess_thermal(np.zeros((48, 64)))
    with pytest.raises(InputError, match="unsupported thermal dtype"):
        preprocess_thermal(np.full((48, 64), True))
    with pytest.raises(InputError, match="no such file"):
        load_thermal(tmp_path / "missing.npy")
    with pytest.raises(InputError, match="unsupported thermal file type"):
        load_thermal(tmp_path / "frame.tiff")
    np.save(tmp_path / "good.npy", np.full((48, 64), 30000, dtype=np.uint16))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "good.npy").read_bytes()[:150])
    with pytest.raises(InputError, match=r"not a readable \.npy"):
        load_thermal(tmp_path / "cut.npy")


def test_thermal_png_files(tmp_path: Path, raw: Path) -> None:
    image_module = pytest.importorskip("PIL.Image")
    counts = np.load(raw / "thermal_raw16.npy")
    image_module.fromarray(counts).save(tmp_path / "radiometric.png")
    np.testing.assert_array_equal(load_thermal(tmp_path / "radiometric.png"), preprocess_thermal(counts))
    data = (raw / "thermal_8bit.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.png"):
        load_thermal(tmp_path / "cut.png")


# --------------------------------------------------------------------------- IMU


def test_imu_unit_conversions() -> None:
    n = 1000
    rng = np.random.default_rng(2)
    si = rng.standard_normal((n, 6))
    native = si.copy()
    native[:, :3] /= 9.80665
    native[:, 3:] *= 180.0 / math.pi
    raw_cfg = dict(normalization="none", resample="none", target_samples=n)
    ref = preprocess_imu(si, 200.0, ImuPreprocess(**raw_cfg))
    got = preprocess_imu(native, 200.0, ImuPreprocess(accel_unit="g", gyro_unit="deg/s", **raw_cfg))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ref, si.T.astype(np.float32))


def test_imu_channel_order_and_gravity() -> None:
    n = 1000
    samples = np.tile(np.arange(6, dtype=np.float64), (n, 1)) + np.linspace(0, 1, n)[:, None]
    cfg = ImuPreprocess(
        input_channels=("gx", "gy", "gz", "ax", "ay", "az"), normalization="none", resample="none", target_samples=n
    )
    out = preprocess_imu(samples, None, cfg)
    np.testing.assert_allclose(out[0], samples[:, 3])  # ax was column 3
    np.testing.assert_allclose(out[3], samples[:, 0])
    grav = preprocess_imu(
        samples, None, ImuPreprocess(gravity="mean", normalization="none", resample="none", target_samples=n)
    )
    np.testing.assert_allclose(grav[:3].mean(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(grav[3:], samples[:, 3:].T, rtol=1e-6)


def test_imu_resampling_sine_200hz_to_400hz() -> None:
    rate_hz, freq_hz = 200.0, 1.3
    t = np.arange(1000) / rate_hz  # 5 s at 200 Hz
    samples = np.stack([np.sin(2 * np.pi * freq_hz * t + k) for k in range(6)], axis=1)
    cfg = ImuPreprocess(normalization="none")
    out = preprocess_imu(samples, rate_hz, cfg)
    assert out.shape == (6, 2000)
    grid = np.arange(2000) / 400.0
    ref = np.stack([np.sin(2 * np.pi * freq_hz * grid + k) for k in range(6)])
    inner = grid <= t[-1]  # the last grid point holds the last sample
    # Linear interpolation error bound: (2 pi f)^2 / 8 * dt^2 = 2.1e-4.
    assert np.abs(out[:, inner] - ref[:, inner]).max() <= 2.2e-4
    with_times = preprocess_imu(samples, None, cfg, t_s=t + 100.0)
    np.testing.assert_allclose(with_times, out, atol=1e-6)
    nominal = preprocess_imu(samples, None, ImuPreprocess(normalization="none", input_rate_hz=rate_hz))
    np.testing.assert_array_equal(nominal, out)


def test_imu_layouts_and_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    samples = rng.standard_normal((1000, 6))
    ref = preprocess_imu(samples, 200.0)
    np.save(tmp_path / "tm.npy", samples)
    np.save(tmp_path / "cm.npy", samples.T)
    np.testing.assert_array_equal(load_imu(tmp_path / "tm.npy", 200.0), ref)
    np.testing.assert_array_equal(load_imu(tmp_path / "cm.npy", 200.0), ref)
    t = np.arange(1000) / 200.0
    np.savetxt(tmp_path / "plain.csv", samples, delimiter=",")
    np.savetxt(tmp_path / "timed.csv", np.column_stack([t, samples]), delimiter=",")
    shuffled = ["gz", "t_s", "ax", "ay", "az", "gx", "gy"]
    cols = {"t_s": t, **{c: samples[:, i] for i, c in enumerate(("ax", "ay", "az", "gx", "gy", "gz"))}}
    np.savetxt(
        tmp_path / "named.csv",
        np.column_stack([cols[c] for c in shuffled]),
        delimiter=",",
        header=",".join(shuffled),
        comments="",
    )
    np.testing.assert_allclose(load_imu(tmp_path / "plain.csv", 200.0), ref, atol=1e-5)
    np.testing.assert_allclose(load_imu(tmp_path / "timed.csv"), ref, atol=1e-5)
    np.testing.assert_allclose(load_imu(tmp_path / "named.csv", 50.0), ref, atol=1e-5)  # the time column wins


def test_imu_errors(tmp_path: Path) -> None:
    good = np.zeros((1000, 6))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"samples": np.zeros((1000, 5)), "rate_hz": 200.0}, r"expected IMU samples \(N, 6\)"),
        ({"samples": np.zeros((6, 1000)), "rate_hz": 200.0}, "x.T"),
        ({"samples": np.zeros((999, 6)), "rate_hz": 200.0}, "window needs 5 s"),
        ({"samples": np.zeros((1, 6)), "rate_hz": 200.0}, "1 samples"),
        ({"samples": good, "rate_hz": 0.0}, "must be positive"),
        ({"samples": good, "rate_hz": -5.0}, "must be positive"),
        ({"samples": good}, "unknown sample rate"),
        ({"samples": good, "rate_hz": 200.0, "t_s": np.arange(1000) / 200.0}, "not both"),
        ({"samples": good, "t_s": np.r_[np.arange(999) / 200.0, 1.0]}, "strictly increasing"),
        ({"samples": good, "t_s": np.arange(10) / 200.0}, "shape"),
        ({"samples": good, "t_s": np.full(1000, np.nan)}, "NaN/inf"),
    ]
    for kwargs, pattern in cases:
        with pytest.raises(InputError, match=pattern):
            preprocess_imu(**kwargs)
    bad = good.copy()
    bad[5, 2] = np.inf
    with pytest.raises(InputError, match="NaN/inf"):
        preprocess_imu(bad, 200.0)
    with pytest.raises(InputError, match="window needs 2000"):
        preprocess_imu(np.zeros((1999, 6)), None, ImuPreprocess.fixture())


def test_imu_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_imu(tmp_path / "missing.csv", 200.0)
    with pytest.raises(InputError, match="unsupported IMU file type"):
        load_imu(tmp_path / "imu.bin", 200.0)
    np.save(tmp_path / "square.npy", np.zeros((6, 6)))
    with pytest.raises(InputError, match="ambiguous"):
        load_imu(tmp_path / "square.npy", 200.0)
    np.save(tmp_path / "five.npy", np.zeros((1000, 5)))
    with pytest.raises(InputError, match=r"\(N, 6\) or \(6, N\)"):
        load_imu(tmp_path / "five.npy", 200.0)
    np.save(tmp_path / "ok.npy", np.zeros((1000, 6)))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "ok.npy").read_bytes()[:300])
    with pytest.raises(InputError, match=r"not a readable \.npy"):
        load_imu(tmp_path / "cut.npy", 200.0)
    (tmp_path / "wide.csv").write_text("1,2,3,4,5,6,7,8\n" * 3)
    with pytest.raises(InputError, match="8 columns"):
        load_imu(tmp_path / "wide.csv", 200.0)
    (tmp_path / "ragged.csv").write_text("1,2,3,4,5,6\n1,2,3\n")
    with pytest.raises(InputError, match="different numbers of columns"):
        load_imu(tmp_path / "ragged.csv", 200.0)
    (tmp_path / "text.csv").write_text("ax,ay,az,gx,gy,gz\n1,2,3,4,5,oops\n")
    with pytest.raises(InputError, match="non-numeric"):
        load_imu(tmp_path / "text.csv", 200.0)
    (tmp_path / "names.csv").write_text("ax,ay,az,gx,gy,gq\n1,2,3,4,5,6\n")
    with pytest.raises(InputError, match="'gz'"):
        load_imu(tmp_path / "names.csv", 200.0)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="empty"):
        load_imu(tmp_path / "empty.csv", 200.0)


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "cfg",
    [
        DepthPreprocess(),
        DepthPreprocess.fixture(),
        DepthPreprocess.realsense(focal_px=615.0),
        ThermalPreprocess(),
        ThermalPreprocess.fixture(),
        ImuPreprocess(),
        ImuPreprocess(input_channels=("gx", "gy", "gz", "ax", "ay", "az"), fixed_scale=(9.8, 9.8, 9.8, 1, 1, 1)),
    ],
)
def test_config_round_trip(cfg: Any) -> None:
    data = cfg.to_dict()
    assert type(cfg).from_dict(data) == cfg
    assert type(cfg).from_dict(json.loads(json.dumps(data))) == cfg
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        type(cfg).from_dict({**data, "bogus": 1})


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="representation"):
        DepthPreprocess(representation="log")
    with pytest.raises(ConfigError, match="min_depth_m"):
        DepthPreprocess(min_depth_m=60.0)
    with pytest.raises(ConfigError, match="min_k"):
        ThermalPreprocess(min_k=320.0, max_k=280.0)
    with pytest.raises(ConfigError, match="permutation"):
        ImuPreprocess(input_channels=("ax", "ay", "az", "gx", "gy", "gy"))
    with pytest.raises(ConfigError, match="accel_unit"):
        ImuPreprocess.from_dict({"accel_unit": "mg"})
    with pytest.raises(ConfigError, match="expected a number"):
        ImuPreprocess.from_dict({"window_s": "5"})


def test_missing_pillow_names_the_extra(monkeypatch: pytest.MonkeyPatch, raw: Path) -> None:
    monkeypatch.setitem(sys.modules, "PIL.Image", None)  # makes `import PIL.Image` raise ImportError
    with pytest.raises(InputError, match=r"pip install 'edgebind\[inputs\]'"):
        load_depth(raw / "depth_mm.png")
    with pytest.raises(InputError, match=r"pip install 'edgebind\[inputs\]'"):
        preprocess_thermal(np.full((48, 64), 100, dtype=np.uint8))
    assert preprocess_thermal(np.full((48, 64), 30000, dtype=np.uint16)).shape == (1, 224, 224)  # numpy only
    assert load_depth(raw / "depth_m.npy").shape == (1, 224, 224)
