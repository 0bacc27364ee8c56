"""LoRA fine-tuning from ``TrainConfig.lora``: only the factors learn, model.pt holds merged plain weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from export.checkpoint import load_checkpoint, load_state_dict_file  # noqa: E402
from export.config import load_config, save_config  # noqa: E402
from export.model import build_model  # noqa: E402
from export.train.config import TrainConfig, train_config_from_dict  # noqa: E402
from export.train.loop import Trainer  # noqa: E402
from export.train.lora import count_parameters, has_lora  # noqa: E402
from export.train.synthetic import SyntheticPairs  # noqa: E402
from runtime.errors import ConfigError  # noqa: E402
from tests.train_support import AUDIO, IMAGE, micro_model_config  # noqa: E402

pytestmark = pytest.mark.torch

LORA = {"rank": 2, "alpha": 4}


@pytest.fixture(scope="module")
def model_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("micro") / "micro.json"
    save_config(micro_model_config(num_blocks=2, audio_drop_path=0.2), path)
    return path


def data(n: int = 16) -> SyntheticPairs:
    return SyntheticPairs(n, "audio", IMAGE, AUDIO, num_classes=4, noise=0.5, seed=0)


def run_config(model_json: Path, out: Path, **over: Any) -> TrainConfig:
    base: dict[str, Any] = dict(model=str(model_json), pairs=("vision", "audio"), steps=6, batch_size=8, lr=1e-2,
                                warmup_steps=1, out_dir=str(out), progress=False, plot=False, device="cpu",
                                lora=LORA)  # fmt: skip
    return TrainConfig(**{**base, **over})


def test_only_lora_factors_train_and_model_pt_is_merged(model_json: Path, tmp_path: Path) -> None:
    trainer = Trainer(run_config(model_json, tmp_path), data())
    model = trainer.model
    counts = count_parameters(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert counts.trainable == counts.lora > 0
    assert trainable and all((".lora_a" in n or ".lora_b" in n) and ".audio." in n for n in trainable)
    # rank-2 factors of in_proj [48,16], out_proj [16,16], fc1 [64,16], fc2 [16,64] in 2 audio blocks
    assert counts.lora == 2 * 2 * ((48 + 16) + (16 + 16) + (64 + 16) + (16 + 64))
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in model.parameters() if p.requires_grad}
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    trainer.fit()
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())  # base weights and anchor untouched
    assert any(state[k].abs().sum() > 0 for k in state if k.endswith(".lora_b"))  # the factors learned

    exported = load_state_dict_file(tmp_path / "model.pt")
    plain = build_model(load_config(model_json), ["vision", "audio"])
    assert list(exported) == list(plain.state_dict())  # exactly the original keys, in order
    load_checkpoint(plain, exported)
    assert not has_lora(plain)
    audio = torch.stack([data()[i]["audio"] for i in range(4)])
    with torch.no_grad():
        model.eval()
        want = torch.nn.functional.normalize(model.encode("audio", audio), dim=-1)
        got = torch.nn.functional.normalize(plain.encode("audio", audio), dim=-1)
    assert torch.allclose(got, want, atol=1e-6)
    base_key = "modality_trunks.audio.blocks.0.mlp.fc1.parametrizations.weight.original"
    assert not torch.equal(exported["modality_trunks.audio.blocks.0.mlp.fc1.weight"], frozen[base_key])  # W + BA


def test_train_also_and_resume_bit_for_bit(model_json: Path, tmp_path: Path) -> None:
    lora = {**LORA, "targets": ["attn.in_proj_weight", "mlp.fc2.weight"], "train_also": ["modality_heads.audio"]}
    full = Trainer(run_config(model_json, tmp_path / "full", lora=lora, checkpoint_every=3), data()).fit()
    model = Trainer(run_config(model_json, tmp_path / "x", lora=lora), data()).model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    head = {"modality_heads.audio.0.weight", "modality_heads.audio.0.bias", "modality_heads.audio.2.weight"}
    assert {n for n in trainable if "lora_" not in n} == head
    assert not any("fc1" in n or "out_proj" in n for n in trainable)
    part_cfg = run_config(model_json, tmp_path / "part", lora=lora, checkpoint_every=3)
    Trainer(part_cfg, data()).fit(stop_after=3)
    second = Trainer(part_cfg, data())
    assert second.resume() == 3
    resumed = second.fit()
    assert [r["loss"] for r in resumed.history if "loss" in r] == [r["loss"] for r in full.history if "loss" in r][3:]
    a, b = load_state_dict_file(tmp_path / "full" / "model.pt"), load_state_dict_file(tmp_path / "part" / "model.pt")
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_config_is_validated(model_json: Path, tmp_path: Path) -> None:
    base = {"model": str(model_json), "pairs": ["vision", "audio"]}
    for lora, message in (
        ({"rank": 0}, r"lora\.rank"),
        ({"rank": 2, "dropout": 0.1}, "unknown key 'dropout'"),
        ({"alpha": -1}, r"lora\.alpha"),
        ({"targets": []}, r"lora\.targets"),
        ({"train_also": ["modality_heads.vision"]}, "not inside a trained tower"),
        ({"train_also": ["modality_postprocessors.audio"]}, "not inside a trained tower"),
    ):
        with pytest.raises(ConfigError, match=message):
            train_config_from_dict({**base, "lora": lora})
    with pytest.raises(ConfigError, match=r"lora\.targets: no 2-D parameter"):
        Trainer(run_config(model_json, tmp_path, lora={"targets": ["nope.weight"]}), data())
    plain = train_config_from_dict(base)
    assert plain.config_hash() == train_config_from_dict({**base, "lora": {}, "init_openclip": ""}).config_hash()
    assert plain.config_hash() != train_config_from_dict({**base, "lora": LORA}).config_hash()
