"""OpenCLIP -> ImageBind tower initialisation against a tiny random open_clip CLIP model.

open_clip's model code (``open_clip.model`` / ``open_clip.transformer``) is pure torch; only its
package ``__init__`` (transforms, downloads) needs torchvision and tqdm, and its ``utils`` imports
one torchvision batch-norm class. Where ``import open_clip`` fails for that reason, the fixture
imports ``open_clip.model`` alone, behind a throw-away stub of that one class, and removes
the stub and the partial package from ``sys.modules`` afterwards.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import math
import sys
import types
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from export.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from export.config import ModelConfig, TowerConfig, load_config, save_config  # noqa: E402
from export.model import build_model  # noqa: E402
from export.train.config import TrainConfig  # noqa: E402
from export.train.loop import Trainer  # noqa: E402
from export.train.openclip import (  # noqa: E402
    check_openclip_config,
    inflate_patch_conv,
    load_openclip,
    openclip_state_dict,
    tower_configs,
)
from export.train.synthetic import SyntheticPairs  # noqa: E402
from runtime.errors import ConfigError  # noqa: E402

pytestmark = pytest.mark.torch

CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 28, "layers": 2, "width": 32, "head_width": 16, "patch_size": 14},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 4, "layers": 2},
}
AUDIO = (1, 32, 32)


def _drop(prefix: str) -> None:
    for name in [n for n in sys.modules if n == prefix or n.startswith(prefix + ".")]:
        del sys.modules[name]


def _import_model_module() -> Any:
    """``open_clip.model`` without running ``open_clip/__init__.py`` (stubbing torchvision if needed)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open_clip is not installed")
    saved = {n: m for n, m in sys.modules.items() if n == "torchvision" or n.startswith("torchvision.")}
    _drop("open_clip")
    package = types.ModuleType("open_clip")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["open_clip"] = package
    try:
        try:
            import torchvision.ops.misc  # noqa: F401
        except Exception:  # missing, or a CUDA build whose C++ ops do not load on a CPU torch
            _drop("torchvision")
            names = ("torchvision", "torchvision.ops", "torchvision.ops.misc")
            stub = {n: types.ModuleType(n) for n in names}
            stub["torchvision.ops.misc"].FrozenBatchNorm2d = type("FrozenBatchNorm2d", (torch.nn.Module,), {})  # type: ignore[attr-defined]
            sys.modules.update(stub)
        return importlib.import_module("open_clip.model")
    finally:
        _drop("torchvision")
        sys.modules.update(saved)
        _drop("open_clip")


@pytest.fixture(scope="module")
def open_clip_model() -> Any:
    try:
        import open_clip

        return open_clip.model
    except ModuleNotFoundError as exc:
        if exc.name == "open_clip":
            pytest.skip("open_clip is not installed")
    except (ImportError, RuntimeError, OSError):
        pass
    return _import_model_module()


def our_config(vision: TowerConfig, text: TowerConfig, out_dim: int) -> ModelConfig:
    def tower(shape: tuple[int, ...], kernel: tuple[int, ...], **kw: Any) -> TowerConfig:
        return TowerConfig(embed_dim=16, num_blocks=1, num_heads=2, input_shape=shape, kernel_size=kernel,
                           bias_kv=True, **kw)  # fmt: skip

    return ModelConfig(
        name="clipmini", out_embed_dim=out_dim, vision=vision, text=text,
        audio=tower(AUDIO, (16, 16)), depth=tower((1, 32, 32), (16, 16)), thermal=tower((1, 32, 32), (16, 16)),
        imu=tower((6, 64), (8,)),
    )  # fmt: skip


@pytest.fixture(scope="module")
def clip_model(open_clip_model: Any) -> Any:
    torch.manual_seed(0)
    model = open_clip_model.CLIP(CLIP_CONFIG["embed_dim"], CLIP_CONFIG["vision_cfg"], CLIP_CONFIG["text_cfg"]).eval()
    with torch.no_grad():  # non-trivial norms, biases and scale: no key may be matched by accident
        for name, param in model.named_parameters():
            if name != "logit_scale":
                param.add_(0.1 * torch.randn_like(param))
        model.logit_scale.fill_(3.5)
    return model


@pytest.fixture(scope="module")
def cfg() -> ModelConfig:
    towers = tower_configs(CLIP_CONFIG)
    return our_config(towers["vision"], towers["text"], towers["out_embed_dim"])


def converted(clip_model: Any, cfg: ModelConfig) -> Any:
    ours = build_model(cfg, ["vision", "text"])
    load_checkpoint(ours, openclip_state_dict(clip_model.state_dict(), cfg, clip_config=CLIP_CONFIG))
    return ours


def tokens(batch: int = 5, length: int = 8, vocab: int = 64) -> Any:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab - 2, (batch, length), generator=gen)
    ends = torch.randint(2, length, (batch,), generator=gen)
    for row, end in enumerate(ends.tolist()):  # start token .. words .. end-of-text (largest id), then padding
        ids[row, 0], ids[row, end] = vocab - 2, vocab - 1
        ids[row, end + 1 :] = 0
    return ids


def cosine(a: Any, b: Any) -> Any:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def test_inflated_conv_on_a_repeated_image_equals_the_2d_conv() -> None:
    weight, image = torch.randn(8, 3, 14, 14), torch.randn(2, 3, 28, 28)
    flat = torch.nn.functional.conv2d(image, weight, stride=14)
    clip = image.unsqueeze(2).expand(-1, -1, 2, -1, -1)
    inflated = torch.nn.functional.conv3d(clip, inflate_patch_conv(weight, 2), stride=(2, 14, 14)).squeeze(2)
    assert torch.allclose(inflated, flat, atol=1e-5)
    assert torch.equal(inflate_patch_conv(weight, 2).sum(dim=2), weight)  # w/2 + w/2 == w exactly


def test_towers_match_open_clip(clip_model: Any, cfg: ModelConfig) -> None:
    ours = converted(clip_model, cfg)
    image = torch.randn(4, 3, 28, 28, generator=torch.Generator().manual_seed(2))
    ids = tokens()
    with torch.no_grad():
        want_image = clip_model.encode_image(image, normalize=True)
        want_text = clip_model.encode_text(ids, normalize=True)
        got_image = ours.encode("vision", image)
        got_clip = ours.encode("vision", image.unsqueeze(2).repeat(1, 1, 2, 1, 1))  # a static 2-frame clip
        got_text = ours.encode("text", ids)
    assert cosine(got_image, want_image).min() >= 0.99999
    assert cosine(got_text, want_text).min() >= 0.99999
    assert torch.allclose(got_clip, got_image, atol=1e-6)
    assert ours.output_scale("text") == pytest.approx(min(math.exp(3.5), 100.0), rel=1e-6)  # logit_scale moved over
    assert torch.allclose(got_text / ours.output_scale("text"), want_text, atol=1e-3)
    # the LayerNorm epsilon (OpenCLIP 1e-5, ImageBind 1e-6) is the only difference left
    for module in clip_model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 1e-6
    try:
        with torch.no_grad():
            assert torch.allclose(ours.encode("vision", image), clip_model.encode_image(image, normalize=True),
                                  atol=1e-6)  # fmt: skip
            text_unit = ours.encode("text", ids) / ours.output_scale("text")
            assert torch.allclose(text_unit, clip_model.encode_text(ids, normalize=True), atol=1e-6)
    finally:
        for module in clip_model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.eps = 1e-5


def test_conversion_errors_name_the_key_and_shapes(clip_model: Any, cfg: ModelConfig) -> None:
    sd = clip_model.state_dict()
    missing = {k: v for k, v in sd.items() if k != "visual.ln_pre.weight"}
    with pytest.raises(CheckpointError, match=r"missing visual\.ln_pre\.weight .*pre_transformer_layer\.0\.weight"):
        openclip_state_dict(missing, cfg)
    wrong = {**sd, "visual.proj": torch.zeros(32, 8)}
    with pytest.raises(CheckpointError, match=r"visual\.proj \[32,8\] -> modality_heads\.vision\.2\.weight: "
                                              r"expected \[16,32\], found \[8,32\]"):  # fmt: skip
        openclip_state_dict(wrong, cfg)
    extra = {**sd, "visual.transformer.resblocks.0.ls_1.gamma": torch.ones(32)}
    with pytest.raises(CheckpointError, match=r"ls_1\.gamma \[32\] has no place"):
        openclip_state_dict(extra, cfg)
    text_only = openclip_state_dict({k: v for k, v in sd.items() if not k.startswith("visual.")}, cfg, ["text"])
    assert all(".text." in k for k in text_only) and "modality_preprocessors.text.mask" in text_only
    wrapped = openclip_state_dict({f"module.{k}": v for k, v in sd.items()}, cfg, ["vision"])
    assert set(wrapped) == {k for k in build_model(cfg, ["vision"]).state_dict()}


def test_architecture_config_is_checked(cfg: ModelConfig) -> None:
    check_openclip_config(CLIP_CONFIG, cfg)
    heads = json.loads(json.dumps(CLIP_CONFIG))
    heads["vision_cfg"]["head_width"] = 8
    with pytest.raises(ConfigError, match=r"clipmini\.vision\.num_heads is 2, the OpenCLIP model has 4"):
        check_openclip_config(heads, cfg)
    with pytest.raises(ConfigError, match="QuickGELU"):
        check_openclip_config({**CLIP_CONFIG, "quick_gelu": True}, cfg)
    layer_scale = json.loads(json.dumps(CLIP_CONFIG))
    layer_scale["text_cfg"]["ls_init_value"] = 1e-5
    with pytest.raises(ConfigError, match=r"text_cfg\.ls_init_value"):
        check_openclip_config(layer_scale, cfg)
    vit_h14 = {"embed_dim": 1024, "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80,
               "patch_size": 14}, "text_cfg": {"width": 1024, "heads": 16, "layers": 24}}  # fmt: skip
    huge = tower_configs(vit_h14)  # open_clip's ViT-H-14.json gives exactly ImageBind huge's towers
    official = load_config("imagebind_huge")
    for field in ("embed_dim", "num_blocks", "num_heads", "input_shape", "kernel_size", "vocab_size"):
        assert getattr(huge["vision"], field) == getattr(official.vision, field)
        assert getattr(huge["text"], field) == getattr(official.text, field)


def test_load_openclip_reads_local_files_only(clip_model: Any, tmp_path: Path) -> None:
    sd = clip_model.state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "epoch_3.pt")
    loaded = load_openclip("tiny", tmp_path / "epoch_3.pt")
    assert set(loaded) == set(sd) and all(torch.equal(loaded[k], v) for k, v in sd.items())
    folder = tmp_path / "snapshot"
    folder.mkdir()
    torch.save(sd, folder / "open_clip_pytorch_model.bin")
    assert set(load_openclip("tiny", folder)) == set(sd)
    with pytest.raises(CheckpointError, match=r"no such OpenCLIP checkpoint file for ViT-H-14 .*nothing is downloaded"):
        load_openclip("ViT-H-14", "laion2b_s32b_b79k")
    (tmp_path / "bad.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable OpenCLIP checkpoint"):
        load_openclip("tiny", tmp_path / "bad.bin")


def test_trainer_initialises_frozen_towers_from_openclip(clip_model: Any, cfg: ModelConfig, tmp_path: Path) -> None:
    save_config(cfg, tmp_path / "model.json")
    (tmp_path / "clip.json").write_text(json.dumps(CLIP_CONFIG))
    torch.save(clip_model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    run = TrainConfig(model=str(tmp_path / "model.json"), pairs=("vision", "audio"), steps=2, batch_size=4,
                      init_openclip=str(tmp_path), openclip_model=str(tmp_path / "clip.json"),
                      out_dir=str(tmp_path / "run"), progress=False, plot=False, device="cpu")  # fmt: skip
    data = SyntheticPairs(8, "audio", cfg.vision.input_shape, AUDIO)
    trainer = Trainer(run, data)
    want = openclip_state_dict(clip_model.state_dict(), cfg, ["vision"])
    state = trainer.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in want.items())
    trainer.fit()
    after = trainer.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in want.items())  # the OpenCLIP anchor stays frozen
    bad = dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, num_heads=4))
    save_config(bad, tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="num_heads"):
        Trainer(run.with_overrides(model=str(tmp_path / "bad.json")), data)


def test_vit_h14_fills_imagebind_huge_towers(open_clip_model: Any) -> None:
    from export.train.openclip import openclip_config

    clip_config = openclip_config("ViT-H-14")  # from open_clip, or its installed model_configs JSON
    assert clip_config is not None
    huge = load_config("imagebind_huge")
    with torch.device("meta"):  # shapes only: nothing is allocated
        clip = open_clip_model.CLIP(clip_config["embed_dim"], clip_config["vision_cfg"], clip_config["text_cfg"])
        want = build_model(huge, ["vision", "text"]).state_dict()
    state = openclip_state_dict(clip.state_dict(), huge, clip_config=clip_config)
    assert list(state) == list(want)
    assert all(tuple(state[k].shape) == tuple(v.shape) for k, v in want.items())
