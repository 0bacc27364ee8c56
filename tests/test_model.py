"""Numerical parity of export.model with the official tiny-model goldens, plus config loading."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.checkpoint import load_checkpoint, load_state_dict_file  # noqa: E402
from export.config import (  # noqa: E402
    MODALITIES,
    ModelConfig,
    config_from_official_kwargs,
    list_presets,
    load_config,
    save_config,
)
from export.model import ImageBindModel, build_model  # noqa: E402
from runtime.errors import ConfigError, InputError  # noqa: E402

MIN_COSINE = 0.99999
MAX_ABS_PER_SCALE = 1e-4
# (golden name, modality, input file, batch sizes)
GOLDENS = [
    ("vision", "vision", "pre/vision.npy", (1, 2)),
    ("vision_video", "vision", "inputs/vision_video.npy", (1,)),
    ("text", "text", "pre/text_tokens.npy", (1, 4)),
    ("audio", "audio", "pre/audio.npy", (1, 2)),
    ("depth", "depth", "inputs/depth.npy", (1, 2)),
    ("thermal", "thermal", "inputs/thermal.npy", (1, 2)),
    ("imu", "imu", "inputs/imu.npy", (1, 2)),
]
CASES = [(name, mod, path, b) for name, mod, path, batches in GOLDENS for b in batches]
CASE_IDS = [f"{name}_b{b}" for name, _, _, b in CASES]


@pytest.fixture(scope="module")
def tiny(official_dir: Path) -> ImageBindModel:
    """The tiny model from the official kwargs file with the official checkpoint loaded."""
    model = build_model(load_config(official_dir / "tiny_config.json"))
    load_checkpoint(model, load_state_dict_file(official_dir / "tiny_official.pt"))
    return model


@pytest.fixture(scope="module")
def tiny64(tiny: ImageBindModel) -> ImageBindModel:
    """The same model in float64."""
    return copy.deepcopy(tiny).double()


def _compare(got: np.ndarray, want: np.ndarray, scale: float) -> tuple[float, float]:
    """Return (max abs error / scale, lowest row cosine)."""
    got, want = got.astype(np.float64), want.astype(np.float64)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    return float(np.abs(got - want).max() / scale), float(cos.min())


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_matches_official_goldens(tiny, official_dir, case) -> None:
    name, modality, path, batch = case
    x = torch.from_numpy(np.load(official_dir / path)[:batch])
    with torch.inference_mode():
        got = tiny({modality: x})[modality].numpy()
    assert got.shape == (batch, 32) and got.dtype == np.float32
    scale = tiny.output_scale(modality)
    for prec in ("fp32", "fp64"):
        want = np.load(official_dir / f"emb/{name}_b{batch}_{prec}.npy")
        err, cos = _compare(got, want, scale)
        assert err <= MAX_ABS_PER_SCALE and cos >= MIN_COSINE, (prec, err, cos)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float64_model_matches_fp64_goldens_tightly(tiny64, official_dir, case) -> None:
    name, modality, path, batch = case
    x = torch.from_numpy(np.load(official_dir / path)[:batch])
    if x.is_floating_point():
        x = x.double()
    with torch.inference_mode():
        got = tiny64({modality: x})[modality].numpy()
    want = np.load(official_dir / f"emb/{name}_b{batch}_fp64.npy")
    err, _ = _compare(got, want, tiny64.output_scale(modality))
    assert err <= 1e-10


def _stages(model: ImageBindModel, modality: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run the four submodules one by one, as the official intermediates were recorded."""
    pre = model.modality_preprocessors[modality]
    trunk, head = model.modality_trunks[modality], model.modality_heads[modality]
    tokens = pre(x)
    if modality == "text":
        trunk_out = trunk(tokens, pre.mask)
        head_out = head(trunk_out, pre.eot_onehot(x, tokens.dtype))
    else:
        trunk_out = trunk(tokens)
        head_out = head(trunk_out)
    post_out = model.modality_postprocessors[modality](head_out)
    return {"tokens": tokens, "trunk_out": trunk_out, "head_out": head_out, "post_out": post_out}


@pytest.mark.parametrize(("name", "modality", "path"), [g[:3] for g in GOLDENS])
def test_intermediate_stages_match(tiny, official_dir, name, modality, path) -> None:
    ref = np.load(official_dir / f"intermediates/{name}_b1.npz")
    x = torch.from_numpy(np.load(official_dir / path)[:1])
    if x.ndim >= 5:
        x = x.flatten(0, 1)
    with torch.inference_mode():
        stages = _stages(tiny, modality, x)
    for key, got in stages.items():
        want = ref[key]
        assert got.shape == want.shape, key
        tol = 1e-5 * max(1.0, float(np.abs(want).max()))
        assert np.abs(got.numpy() - want).max() <= tol, key
    if modality == "text":
        onehot = tiny.modality_preprocessors["text"].eot_onehot(x, torch.float32)
        assert onehot.argmax(-1).tolist() == ref["eos_index"].tolist()


def test_encode_clips_then_host_mean_equals_forward_video(tiny, official_dir) -> None:
    video = torch.from_numpy(np.load(official_dir / "inputs/vision_video.npy"))  # [1, 2, 3, 2, 224, 224]
    with torch.inference_mode():
        whole = tiny({"vision": video})["vision"]
        clips = tiny.encode("vision", video[0])  # [2, 3, 2, 224, 224] → [2, 32]
    assert clips.shape == (2, 32)
    assert torch.allclose(clips.mean(0, keepdim=True), whole, atol=1e-6)


def test_encode_still_image_equals_repeated_two_frame_clip(tiny, official_dir) -> None:
    image = torch.from_numpy(np.load(official_dir / "pre/vision.npy"))
    clip = image.unsqueeze(2).repeat(1, 1, 2, 1, 1)
    with torch.inference_mode():
        assert torch.allclose(tiny.encode("vision", image), tiny.encode("vision", clip), atol=1e-6)


def test_output_scales_and_norms(tiny, official_dir) -> None:
    scales = {m: tiny.output_scale(m) for m in MODALITIES}
    assert scales["vision"] == 1.0
    assert scales["audio"] == pytest.approx(20) and scales["thermal"] == pytest.approx(10)
    assert scales["depth"] == pytest.approx(5) and scales["imu"] == pytest.approx(5)
    assert scales["text"] == pytest.approx(15.788, abs=1e-3)
    x = torch.from_numpy(np.load(official_dir / "inputs/imu.npy"))
    with torch.inference_mode():
        norms = tiny.encode("imu", x).norm(dim=-1)
    assert torch.allclose(norms, torch.full_like(norms, 5.0), atol=1e-5)


@pytest.mark.parametrize(
    ("modality", "shape", "dtype"),
    [
        ("vision", (1, 3, 3, 224, 224), torch.float32),
        ("audio", (1, 1, 128, 200), torch.float32),
        ("text", (1, 77), torch.float32),
        ("imu", (1, 2000, 6), torch.float32),
    ],
)
def test_encode_rejects_wrong_layouts(tiny, modality, shape, dtype) -> None:
    with pytest.raises(InputError, match=modality):
        tiny.encode(modality, torch.zeros(shape, dtype=dtype))


def test_subset_model_builds_only_requested_towers(official_dir) -> None:
    cfg = load_config(official_dir / "tiny_config.json")
    model = build_model(cfg, modalities=["text", "vision"])
    assert model.modalities == ("vision", "text")
    assert {k.split(".")[1] for k in model.state_dict()} == {"vision", "text"}
    with pytest.raises(InputError, match="audio"):
        model.encode("audio", torch.zeros(1, 1, 128, 204))
    with pytest.raises(InputError, match="sound"):
        build_model(cfg, modalities=["sound"])


@pytest.mark.parametrize("modality", MODALITIES)
def test_encode_exports_with_dynamic_batch(tiny, official_dir, modality) -> None:
    row = tiny.input_shape(modality)
    gen = torch.Generator().manual_seed(0)
    if modality == "text":
        x = torch.from_numpy(np.load(official_dir / "pre/text_tokens.npy")[:2])
    else:
        x = torch.randn((2, *row), generator=gen)

    class Tower(torch.nn.Module):
        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            return tiny.encode(modality, inp)

    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(Tower().eval(), (x,), dynamic_shapes=({0: batch},))
    x3 = torch.cat([x, x[:1]])  # batch 3 differs from the traced batch 2
    with torch.inference_mode():
        assert torch.allclose(program.module()(x3), tiny.encode(modality, x3), atol=1e-5)


# ---- configuration ---------------------------------------------------------------------------


def test_presets_load_and_huge_dims() -> None:
    assert {"imagebind_huge", "imagebind_tiny", "edge_small"} <= set(list_presets())
    huge = load_config("imagebind_huge")
    dims = {m: (t.embed_dim, t.num_blocks, t.num_heads, t.bias_kv) for m, t in huge.towers.items()}
    assert dims == {
        "vision": (1280, 32, 16, False), "text": (1024, 24, 16, False), "audio": (768, 12, 12, True),
        "depth": (384, 12, 8, True), "thermal": (768, 12, 12, True), "imu": (512, 6, 8, True),
    }  # fmt: skip
    assert huge.out_embed_dim == 1024
    assert [t.num_tokens for t in huge.towers.values()] == [257, 77, 229, 197, 197, 251]
    for name in list_presets():
        assert isinstance(load_config(name), ModelConfig)


def test_tiny_preset_equals_official_kwargs_file(official_dir) -> None:
    official = load_config(official_dir / "tiny_config.json")
    preset = load_config("imagebind_tiny")
    assert official.towers == preset.towers and official.out_embed_dim == preset.out_embed_dim


def test_flat_official_kwargs_and_own_format_round_trip(official_dir, tmp_path) -> None:
    kwargs = json.loads((official_dir / "tiny_config.json").read_text())["kwargs"]
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps(kwargs))
    cfg = load_config(flat)
    assert cfg.towers == load_config("imagebind_tiny").towers and cfg.name == "flat"
    own = tmp_path / "own.json"
    save_config(cfg, own)
    assert load_config(own) == cfg


def test_unknown_keys_give_one_line_config_error(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kwargs": {"vision_embed_dim": 64, "vision_patch": 3}}))
    with pytest.raises(ConfigError, match="vision_patch") as info:
        load_config(bad)
    assert "\n" not in str(info.value)
    own = json.loads((Path(__file__).parents[1] / "export/configs/imagebind_tiny.json").read_text())
    own["audio"]["mel_binz"] = 64
    bad.write_text(json.dumps(own))
    with pytest.raises(ConfigError, match="mel_binz"):
        load_config(bad)
    with pytest.raises(ConfigError, match="imagebind_giant"):
        load_config("imagebind_giant")


def test_invalid_values_are_rejected() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        config_from_official_kwargs({"vision_embed_dim": 30, "vision_num_heads": 4})
    with pytest.raises(ConfigError, match="frames"):
        config_from_official_kwargs({"video_frames": 4})


def test_forward_refuses_5d_vision_with_a_hint(tiny) -> None:
    with pytest.raises(InputError, match=r"\[B, S, 3, 2, 224, 224\]"):
        tiny({"vision": torch.zeros(1, 3, 2, 224, 224)})
