"""Paired manifest, model-ready rows through the runtime preprocessing, collation, augmentations."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.config import config_from_json, load_config  # noqa: E402
from export.train.augment import AugmentConfig, Augmenter, make_augmenter  # noqa: E402
from export.train.data import (  # noqa: E402
    ManifestError,
    PairedDataset,
    PairRecord,
    PairSpec,
    collate_pairs,
    read_manifest,
    write_manifest,
)
from runtime.inputs import preprocess_config  # noqa: E402
from runtime.preprocess import audio, depth, imu, thermal, vision  # noqa: E402
from runtime.preprocess.wav import write_wav  # noqa: E402
from runtime.types import Modality  # noqa: E402

pytestmark = pytest.mark.torch


def tiny_config():
    """Small rows so every file loads in milliseconds: image 28, maps 32, fbank 32 x 24, IMU 6 x 80."""
    tower = {"embed_dim": 16, "num_blocks": 1, "num_heads": 2}
    return config_from_json(
        {
            "name": "tiny_rows",
            "out_embed_dim": 16,
            "vision": {**tower, "input_shape": [3, 2, 28, 28]},
            "text": tower,
            "audio": {**tower, "input_shape": [1, 32, 24]},
            "depth": {**tower, "input_shape": [1, 32, 32]},
            "thermal": {**tower, "input_shape": [1, 32, 32]},
            "imu": {**tower, "input_shape": [6, 80], "drop_path": 0.0},
        }
    )


def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr if channels == 3 else arr[..., 0], mode=mode).save(path)
    return path


def write_tone(path: Path, seconds: float, rate: int = 16000, freq: float = 440.0) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, (0.3 * np.sin(2 * np.pi * freq * t) * np.linspace(0.2, 1, t.size)).astype(np.float32), rate)
    return path


@pytest.fixture()
def depth_tree(tmp_path: Path) -> Path:
    (tmp_path / "d").mkdir()
    for i in range(3):
        write_image(tmp_path / "rgb" / f"{i}.png", i)
        np.save(tmp_path / "d" / f"{i}.npy", np.full((30, 40), 1.0 + i, np.float32))
    lines = ["# a comment", ""]
    lines += [json.dumps({"image": f"rgb/{i}.png", "depth": f"d/{i}.npy", "caption": f"scene {i}"}) for i in range(3)]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_spec_from_config_takes_row_shapes_from_the_towers() -> None:
    spec = PairSpec.from_config(tiny_config(), "audio")
    assert spec.row_shape == (1, 32, 24) and spec.image_shape == (3, 28, 28)
    assert spec.preprocess["fbank"]["num_mel_bins"] == 32 and spec.preprocess["target_frames"] == 24
    huge = PairSpec.from_config(load_config("imagebind_huge"), "imu", {"gravity": "mean"})
    assert huge.row_shape == (6, 2000) and huge.preprocess["gravity"] == "mean"
    with pytest.raises(ValueError, match="paired modality"):
        PairSpec.from_config(tiny_config(), "text")


def test_manifest_rows_are_model_ready_and_match_the_runtime(depth_tree: Path) -> None:
    spec = PairSpec.from_config(tiny_config(), "depth")
    read = read_manifest(depth_tree / "pairs.jsonl", "depth")
    assert [r.caption for r in read.records] == ["scene 0", "scene 1", "scene 2"] and not read.dropped
    ds = PairedDataset(read.records, spec, train=False)
    item = ds[1]
    assert item["image"].shape == (3, 28, 28) and item["image"].dtype == torch.float32
    assert item["depth"].shape == (1, 32, 32) and item["depth"].dtype == torch.float32
    assert item["caption"] == "scene 1" and item["index"] == 1
    vis_cfg = preprocess_config(Modality.VISION, spec.vision_preprocess)
    want_img = vision.preprocess_image(vision.load_image(depth_tree / "rgb" / "1.png"), vis_cfg)
    np.testing.assert_array_equal(item["image"].numpy(), want_img)
    want_depth = depth.load_depth(depth_tree / "d" / "1.npy", preprocess_config(Modality.DEPTH, spec.preprocess))
    np.testing.assert_array_equal(item["depth"].numpy(), want_depth)
    batch = collate_pairs([ds[0], ds[2]])
    assert batch["image"].shape == (2, 3, 28, 28) and batch["depth"].shape == (2, 1, 32, 32)
    assert batch["caption"] == ["scene 0", "scene 2"] and batch["index"].tolist() == [0, 2]


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("{not json", "not valid JSON"),
        ('["a"]', "expected a JSON object"),
        ('{"image": "rgb/0.png"}', "missing or empty 'depth'"),
        ('{"image": "rgb/0.png", "depth": "d/nope.npy"}', "depth file not found"),
        ('{"image": "rgb/0.png", "depth": "d/0.npy", "colour": 1}', "unknown key 'colour'"),
        ('{"image": "rgb/0.png", "depth": "d/0.npy", "caption": 3}', "'caption' must be a string"),
        ('{"image": "rgb/0.png", "depth": "d/0.npy", "start_s": -1}', "'start_s' must be a number"),
    ],
)
def test_malformed_lines_give_one_line_errors_naming_the_line(depth_tree: Path, line: str, needle: str) -> None:
    path = depth_tree / "pairs.jsonl"
    path.write_text(path.read_text() + line + "\n")  # the 6th line of the file
    with pytest.raises(ManifestError) as err:
        read_manifest(path, "depth")
    message = str(err.value)
    assert f"pairs.jsonl:6: {needle}" in message and "\n" not in message


def test_skip_bad_counts_and_logs_dropped_rows(depth_tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = depth_tree / "pairs.jsonl"
    path.write_text(path.read_text() + "{oops\n" + '{"image": "rgb/9.png", "depth": "d/0.npy"}\n')
    with caplog.at_level(logging.WARNING, logger="edgebind.train.data"):
        read = read_manifest(path, "depth", skip_bad=True)
    assert len(read.records) == 3 and len(read.dropped) == 2
    assert ":6:" in read.dropped[0] and ":7:" in read.dropped[1]
    assert "dropped 2 bad row(s)" in caplog.text


def test_write_manifest_round_trip(depth_tree: Path, tmp_path: Path) -> None:
    records = read_manifest(depth_tree / "pairs.jsonl", "depth").records
    records[0] = PairRecord(records[0].image, records[0].target, "x", preprocess={"focal_px": 500.0})
    out = depth_tree / "copy.jsonl"
    assert write_manifest(records, out, "depth") == 3
    again = read_manifest(out, "depth").records
    assert [r.target.resolve() for r in again] == [r.target.resolve() for r in records]
    assert again[0].preprocess == {"focal_px": 500.0} and again[0].caption == "x"


def test_audio_rows_clip_choice_and_start_s(tmp_path: Path) -> None:
    spec = PairSpec.from_config(tiny_config(), "audio")
    img = write_image(tmp_path / "i.png", 0)
    wav = write_tone(tmp_path / "a.wav", 4.0, rate=8000)
    cfg = preprocess_config(Modality.AUDIO, spec.preprocess)
    clips = audio.load_audio_file(wav, cfg)
    assert clips.shape == (3, 1, 32, 24)
    records = [PairRecord(img, wav), PairRecord(img, wav, start_s=1.0)]
    evaluation = PairedDataset(records, spec, train=False)
    np.testing.assert_array_equal(evaluation[0]["audio"].numpy(), clips[1])
    assert evaluation[1]["audio"].shape == (1, 32, 24)
    train_a, train_b = PairedDataset(records, spec, seed=3), PairedDataset(records, spec, seed=3)
    np.testing.assert_array_equal(train_a[0]["audio"].numpy(), train_b[0]["audio"].numpy())


def test_imu_and_thermal_rows(tmp_path: Path) -> None:
    img = write_image(tmp_path / "i.png", 0)
    samples = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32)
    np.save(tmp_path / "imu.npy", samples)
    spec = PairSpec.from_config(tiny_config(), "imu")
    ds = PairedDataset([PairRecord(img, tmp_path / "imu.npy", rate_hz=20.0)], spec, train=False)
    cfg = preprocess_config(Modality.IMU, spec.preprocess)
    np.testing.assert_allclose(ds[0]["imu"].numpy(), imu.preprocess_imu(samples, 20.0, cfg))
    shifted = PairedDataset([PairRecord(img, tmp_path / "imu.npy", start_s=2.0, rate_hz=20.0)], spec, train=False)
    np.testing.assert_allclose(shifted[0]["imu"].numpy(), imu.preprocess_imu(samples[40:], 20.0, cfg))
    ir = write_image(tmp_path / "ir.jpg", 1, mode="L")
    tspec = PairSpec.from_config(tiny_config(), "thermal")
    row = PairedDataset([PairRecord(img, ir)], tspec, train=False)[0]["thermal"]
    from PIL import Image

    gray = np.asarray(Image.open(ir).convert("L"))
    want = thermal.preprocess_thermal(gray, preprocess_config(Modality.THERMAL, tspec.preprocess))
    np.testing.assert_array_equal(row.numpy(), want)


def test_skip_bad_replaces_an_unreadable_row(depth_tree: Path) -> None:
    (depth_tree / "rgb" / "1.png").write_bytes(b"not a png")
    records = read_manifest(depth_tree / "pairs.jsonl", "depth").records
    spec = PairSpec.from_config(tiny_config(), "depth")
    with pytest.raises(ValueError, match=r"1\.png"):
        PairedDataset(records, spec, train=False)[1]
    ds = PairedDataset(records, spec, train=False, skip_bad=True)
    assert ds[1]["index"] == 2 and ds.bad_rows == 1


@pytest.mark.parametrize(("modality", "shape"), [("audio", (1, 32, 24)), ("depth", (1, 32, 32)), ("imu", (6, 80))])
def test_augmentations_are_seeded_and_shape_preserving(modality: str, shape: tuple[int, ...]) -> None:
    spec = PairSpec.from_config(tiny_config(), modality)
    aug = make_augmenter(spec)
    base = {"image": torch.randn(3, 28, 28), modality: torch.randn(*shape), "caption": "c"}
    copy = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in base.items()}
    one = aug(base, torch.Generator().manual_seed(7))
    two = aug(base, torch.Generator().manual_seed(7))
    other = aug(base, torch.Generator().manual_seed(8))
    for key in ("image", modality):
        assert one[key].shape == base[key].shape and one[key].dtype == torch.float32
        assert torch.equal(one[key], two[key]) and not torch.equal(one[key], other[key])
        assert torch.equal(base[key], copy[key])  # inputs untouched
    assert one["caption"] == "c"


def test_imu_rotation_preserves_triplet_norms() -> None:
    aug = Augmenter("imu", AugmentConfig(imu_scale=0.0, imu_noise_std=0.0, imu_rotation_deg=90.0))
    x = torch.randn(6, 80)
    y = aug.row(x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(y[:3].norm(dim=0), x[:3].norm(dim=0))
    torch.testing.assert_close(y[3:].norm(dim=0), x[3:].norm(dim=0))
    assert not torch.allclose(y, x)


def test_dataset_augmentation_depends_on_seed_epoch_and_index(depth_tree: Path) -> None:
    records = read_manifest(depth_tree / "pairs.jsonl", "depth").records
    spec = PairSpec.from_config(tiny_config(), "depth")
    ds = PairedDataset(records, spec, augment=make_augmenter(spec), seed=5)
    first = ds[0]["depth"]
    assert torch.equal(first, PairedDataset(records, spec, augment=make_augmenter(spec), seed=5)[0]["depth"])
    ds.set_epoch(1)
    assert not torch.equal(first, ds[0]["depth"])


def test_dataset_pickles_and_feeds_a_dataloader(depth_tree: Path) -> None:
    import pickle

    records = read_manifest(depth_tree / "pairs.jsonl", "depth").records
    spec = PairSpec.from_config(tiny_config(), "depth")
    ds = PairedDataset(records, spec, augment=make_augmenter(spec), seed=1)
    clone = pickle.loads(pickle.dumps(ds))  # worker processes receive a pickled copy
    assert torch.equal(clone[2]["depth"], ds[2]["depth"])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_pairs)
    sizes = [batch["depth"].shape[0] for batch in loader]
    assert sizes == [2, 1]
