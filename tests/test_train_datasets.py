"""Native-layout readers (AudioSet, SUN RGB-D, LLVIP, Ego4D) on small fake trees of the same layout."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.train.data import PairSpec, collate_pairs  # noqa: E402
from export.train.datasets import open_dataset, reader_info  # noqa: E402
from export.train.datasets.audioset import audioset_records  # noqa: E402
from export.train.datasets.ego4d import ego4d_records, read_imu_table  # noqa: E402
from export.train.datasets.llvip import llvip_records  # noqa: E402
from export.train.datasets.sunrgbd import sunrgbd_records  # noqa: E402
from runtime.inputs import preprocess_config  # noqa: E402
from runtime.preprocess import depth, imu  # noqa: E402
from runtime.preprocess.wav import write_wav  # noqa: E402
from runtime.types import Modality  # noqa: E402
from tests.test_train_data import tiny_config  # noqa: E402

pytestmark = pytest.mark.torch


def save_image(path: Path, value: int, mode: str = "RGB", size: tuple[int, int] = (40, 30)) -> Path:
    """A flat image whose pixel value identifies it."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    color = (value, 255 - value, value // 2) if mode == "RGB" else value
    Image.new(mode, size, color).save(path)
    return path


def save_wav(path: Path, seconds: float = 3.0, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    write_wav(path, (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate)
    return path


# --------------------------------------------------------------------------- AudioSet


@pytest.fixture()
def audioset_root(tmp_path: Path) -> Path:
    root = tmp_path / "audioset"
    root.mkdir()
    (root / "balanced_train_segments.csv").write_text(
        "# Segments csv created Sun Mar  5 10:54:25 2017\n"
        "# num_ytids=3, num_segs=3, num_unique_labels=2, num_positive_labels=4\n"
        "# YTID, start_seconds, end_seconds, positive_labels\n"
        '--aaaaaaaaa, 30.000, 40.000, "/m/dog,/m/bark"\n'
        '-bbbbbbbbbb, 0.000, 10.000, "/m/car"\n'
        'ccccccccccc, 10.000, 20.000, "/m/dog"\n'
    )
    labels = 'index,mid,display_name\n0,/m/dog,Dog\n1,/m/bark,Bark\n2,/m/car,"Car"\n'
    (root / "class_labels_indices.csv").write_text(labels)
    save_wav(root / "audio" / "balanced_train" / "--aaaaaaaaa.wav")
    for k, value in enumerate((10, 20, 30)):
        save_image(root / "frames" / "balanced_train" / "--aaaaaaaaa" / f"{k + 1:06d}.jpg", value)
    save_wav(root / "audio" / "balanced_train" / "-bbbbbbbbbb_0.wav", rate=8000)
    save_image(root / "frames" / "balanced_train" / "-bbbbbbbbbb_0.jpg", 99)
    return root  # ccccccccccc has no media: a vanished video


def test_audioset_pairs_segments_with_their_middle_frame(
    audioset_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="edgebind.train.data"):
        records = audioset_records(audioset_root, "balanced_train")
    assert [r.target.name for r in records] == ["--aaaaaaaaa.wav", "-bbbbbbbbbb_0.wav"]
    assert records[0].image.name == "000002.jpg" and records[1].image.name == "-bbbbbbbbbb_0.jpg"
    assert [r.caption for r in records] == ["Dog, Bark", "Car"]
    assert "ccccccccccc" in caplog.text and "dropped 1 bad row(s)" in caplog.text
    ds = open_dataset("audioset", audioset_root, PairSpec.from_config(tiny_config(), "audio"), train=False)
    batch = collate_pairs([ds[0], ds[1]])
    assert batch["audio"].shape == (2, 1, 32, 24) and batch["image"].shape == (2, 3, 28, 28)
    assert batch["audio"].dtype == torch.float32 and batch["caption"] == ["Dog, Bark", "Car"]


def test_audioset_missing_csv_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such AudioSet segments CSV"):
        audioset_records(tmp_path, "eval")


# --------------------------------------------------------------------------- SUN RGB-D


def save_sunrgbd_depth(path: Path, metres: float) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    mm = np.full((30, 40), int(metres * 1000), dtype=np.uint16)
    stored = (mm << 3) | (mm >> 13)  # the toolbox's 3-bit right rotation, inverted
    Image.fromarray(stored).save(path)
    return path


@pytest.fixture()
def sunrgbd_root(tmp_path: Path) -> Path:
    root = tmp_path / "SUNRGBD"
    kv1 = root / "kv1" / "NYUdata" / "NYU0001"
    save_image(kv1 / "image" / "NYU0001.jpg", 40)
    save_sunrgbd_depth(kv1 / "depth" / "NYU0001.png", 2.0)
    (kv1 / "intrinsics.txt").write_text("518.857901 0 284.582449\n0 519.469611 208.736166\n0 0 1\n")
    (kv1 / "scene.txt").write_text("living_room")
    rs = root / "realsense" / "lg" / "2014_10_24-16_00_00-1311000073"
    save_image(rs / "image" / "0000103.jpg", 80)
    save_sunrgbd_depth(rs / "depth_bfx" / "0000103.png", 3.0)
    (rs / "intrinsics.txt").write_text("693.7 0 360.4\n0 693.7 264.7\n0 0 1\n")
    broken = root / "xtion" / "xtion_align_data" / "broken"
    save_image(broken / "image" / "x.jpg", 1)
    (broken / "intrinsics.txt").write_text("570 0 320 0 570 240 0 0 1")
    return root


def test_sunrgbd_scenes_carry_their_camera_constants(sunrgbd_root: Path) -> None:
    records = sunrgbd_records(sunrgbd_root)
    assert len(records) == 2  # the broken scene has no depth
    nyu, rs = records
    assert nyu.image.name == "NYU0001.jpg" and nyu.target.parent.name == "depth" and nyu.caption == "living room"
    assert nyu.preprocess == {"focal_px": 518.857901, "baseline_m": 0.075, "png_decode": "sunrgbd"}
    assert rs.target.parent.name == "depth_bfx" and rs.caption == ""
    assert rs.preprocess["baseline_m"] == 0.095 and rs.preprocess["focal_px"] == pytest.approx(693.7)
    spec = PairSpec.from_config(tiny_config(), "depth")
    ds = open_dataset("sunrgbd", sunrgbd_root, spec, train=False)
    row = ds[1]["depth"]
    assert row.shape == (1, 32, 32) and row.dtype == torch.float32
    cfg = preprocess_config(Modality.DEPTH, {**spec.preprocess, **rs.preprocess})
    np.testing.assert_array_equal(row.numpy(), depth.load_depth(rs.target, cfg))
    assert depth.read_depth_m(rs.target, cfg)[0, 0] == pytest.approx(3.0)  # rotation undone: true metres


def test_sunrgbd_split_file(sunrgbd_root: Path, tmp_path: Path) -> None:
    split = tmp_path / "train.txt"
    split.write_text("kv1/NYUdata/NYU0001/\n")
    records = sunrgbd_records(sunrgbd_root, split)
    assert [r.image.name for r in records] == ["NYU0001.jpg"]


# --------------------------------------------------------------------------- LLVIP


def test_llvip_pairs_visible_and_infrared_by_file_name(tmp_path: Path) -> None:
    root = tmp_path / "LLVIP"
    for name, value in (("010001.jpg", 10), ("010002.jpg", 20), ("010003.jpg", 30)):
        save_image(root / "visible" / "train" / name, value)
    for name, value in (("010001.jpg", 110), ("010002.jpg", 120), ("010009.jpg", 190)):
        save_image(root / "infrared" / "train" / name, value, mode="RGB")
    save_image(root / "visible" / "test" / "190001.jpg", 5)
    save_image(root / "infrared" / "test" / "190001.jpg", 6)
    records = llvip_records(root, "train")
    assert [(r.image.parent.parent.name, r.target.parent.parent.name, r.image.name) for r in records] == [
        ("visible", "infrared", "010001.jpg"),
        ("visible", "infrared", "010002.jpg"),
    ]
    ds = open_dataset("llvip", root, PairSpec.from_config(tiny_config(), "thermal"), train=False)
    item = ds[1]
    assert item["thermal"].shape == (1, 32, 32) and item["image"].shape == (3, 28, 28)
    gray = float(item["thermal"].mean())  # 8-bit path: ~L(120, 135, 60) / 255 in [0, 1]
    assert 0.3 < gray < 0.7
    assert len(llvip_records(root, "test")) == 1
    with pytest.raises(ValueError, match="no such LLVIP folder"):
        llvip_records(root, "val")


# --------------------------------------------------------------------------- Ego4D


@pytest.fixture()
def ego4d_root(tmp_path: Path) -> Path:
    root = tmp_path / "v2"
    (root / "imu").mkdir(parents=True)
    rate = 200.0
    t_ms = np.arange(int(12 * rate)) * 1000.0 / rate
    rng = np.random.default_rng(0)
    values = rng.normal(size=(t_ms.size, 6))
    lines = ["component_idx,component_timestamp_ms,canonical_timestamp_ms,gyro_x,gyro_y,gyro_z,accl_x,accl_y,accl_z"]
    for k, (t, v) in enumerate(zip(t_ms, values, strict=True)):
        lines.append(f"0,{t},{t}," + ",".join(f"{x:.9f}" for x in v))
        if k == 100:
            lines.append(f"0,{t},NULL," + ",".join("0" for _ in v))  # known issue: NULL canonical time
            lines.append(f"0,{t},{t}," + ",".join(f"{x:.9f}" for x in v))  # duplicate timestamp
    (root / "imu" / "uid-1.csv").write_text("\n".join(lines) + "\n")
    for k in range(12):
        save_image(root / "frames" / "uid-1" / f"{k + 1:06d}.jpg", 10 * k)
    (root / "imu" / "uid-no-frames.csv").write_text(lines[0] + "\n")
    return root


def test_ego4d_windows_pair_imu_with_the_centre_frame(ego4d_root: Path) -> None:
    records = ego4d_records(ego4d_root, window_s=5.0, hop_s=5.0, frames_fps=1.0)
    assert [r.start_s for r in records] == [0.0, 5.0]
    assert [r.image.name for r in records] == ["000004.jpg", "000009.jpg"]  # nearest to 2.5 s and 7.5 s
    t_s, samples = read_imu_table(str(records[0].target))
    assert t_s.size == 2400 and np.all(np.diff(t_s) > 0)
    spec = PairSpec.from_config(tiny_config(), "imu")
    info = reader_info("ego4d")
    assert info.modality == "imu" and info.loader
    ds = open_dataset("ego4d", ego4d_root, spec, train=False)
    row = ds[1]["imu"]
    assert row.shape == (6, 80) and row.dtype == torch.float32
    keep = (t_s >= 5.0) & (t_s < 11.0)
    cfg = preprocess_config(Modality.IMU, spec.preprocess)
    np.testing.assert_allclose(row.numpy(), imu.preprocess_imu(samples[keep], None, cfg, t_s=t_s[keep]), rtol=1e-6)
    csv_first = np.loadtxt(ego4d_root / "imu" / "uid-1.csv", delimiter=",", skiprows=1, max_rows=1)
    np.testing.assert_allclose(samples[0], csv_first[[6, 7, 8, 3, 4, 5]])  # accel first, then gyro


def test_registry_rejects_unknown_names_and_modality_mismatch(ego4d_root: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'kinetics'"):
        reader_info("kinetics")
    with pytest.raises(ValueError, match="pairs images with imu"):
        open_dataset("ego4d", ego4d_root, PairSpec.from_config(tiny_config(), "audio"))
