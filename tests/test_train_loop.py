"""The trainer on a micro model: learning, frozen towers, bit-exact resume, atomic checkpoints, metrics, config."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from export.checkpoint import CheckpointError, load_state_dict_file  # noqa: E402
from export.config import load_config, save_config  # noqa: E402
from export.model import build_model  # noqa: E402
from export.train import checkpointing  # noqa: E402
from export.train.config import TrainConfig, load_train_config, train_config_from_dict  # noqa: E402
from export.train.evaluate import evaluate_pairs  # noqa: E402
from export.train.loop import Trainer  # noqa: E402
from export.train.metrics import read_metrics  # noqa: E402
from export.train.synthetic import SyntheticPairs  # noqa: E402
from runtime.errors import ConfigError  # noqa: E402
from tests.train_support import AUDIO, IMAGE, micro_model_config  # noqa: E402

pytestmark = pytest.mark.torch



@pytest.fixture(scope="module")
def model_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("micro") / "micro.json"
    save_config(micro_model_config(audio_drop_path=0.3), path)  # drop-path draws from the RNG: resume must restore it
    return path


def data(n: int = 32, seed: int = 0) -> SyntheticPairs:
    return SyntheticPairs(n, "audio", IMAGE, AUDIO, num_classes=4, noise=0.5, seed=seed)


def run_config(model_json: Path, out: Path, **over: Any) -> TrainConfig:
    base: dict[str, Any] = dict(model=str(model_json), pairs=("vision", "audio"), steps=8, batch_size=8, lr=3e-3,
                                warmup_steps=2, out_dir=str(out), progress=False, plot=False,
                                recall_ks=(1, 5))  # fmt: skip
    return TrainConfig(**{**base, **over})


def informative_anchor(model_json: Path) -> torch.nn.Module:
    """A model whose frozen random vision tower separates the classes (no constant cls/pos offset)."""
    torch.manual_seed(0)
    model = build_model(load_config(model_json), ["vision", "audio"])
    with torch.no_grad():
        model.modality_preprocessors.vision.cls_token.zero_()
        model.modality_preprocessors.vision.pos_embedding_helper.pos_embed.zero_()
    return model


def losses(records: list[dict[str, Any]]) -> list[float]:
    return [r["loss"] for r in records if "loss" in r]


def test_loss_decreases_with_frozen_anchor(model_json: Path, tmp_path: Path) -> None:
    cfg = run_config(model_json, tmp_path, steps=24, batch_size=16, eval_every=12)
    model = informative_anchor(model_json)
    vision_before = {k: v.clone() for k, v in model.state_dict().items() if ".vision." in k}
    audio_before = model.modality_trunks.audio.blocks[0].mlp.fc1.weight.clone()
    result = Trainer(cfg, data(64), data(32, seed=0), model=model).fit()
    curve = losses(result.history)
    assert len(curve) == 24 and all(math.isfinite(v) for v in curve)
    assert sum(curve[-6:]) / 6 < 0.7 * sum(curve[:3]) / 3
    assert result.eval["eval/vision->audio/R@5"] > 5 / 32  # above chance for 32 candidates
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in vision_before.items())  # the anchor tower is frozen
    assert not torch.equal(audio_before, model.modality_trunks.audio.blocks[0].mlp.fc1.weight)
    assert model.modality_trunks.vision.training is False  # frozen tower stays in eval mode


def test_cached_anchor_matches_computed_anchor(model_json: Path, tmp_path: Path) -> None:
    cfg = run_config(model_json, tmp_path / "plain", steps=2, shuffle=False)
    plain = Trainer(cfg, data(16), model=informative_anchor(model_json)).fit()
    cached_cfg = cfg.with_overrides(out_dir=str(tmp_path / "cached"), cache_anchor=True)
    trainer = Trainer(cached_cfg, data(16), model=informative_anchor(model_json))
    cached = trainer.fit()
    assert trainer._anchor_cache is not None and tuple(trainer._anchor_cache.shape) == (16, 16)
    assert losses(cached.history) == pytest.approx(losses(plain.history), abs=1e-5)
    with pytest.raises(ConfigError, match="cache_anchor"):
        Trainer(cached_cfg.with_overrides(train_anchor=True), data(16))


def test_both_towers_learn_stage1_style(model_json: Path, tmp_path: Path) -> None:
    cfg = run_config(model_json, tmp_path, steps=16, batch_size=16, train_anchor=True, learn_temperature=True)
    trainer = Trainer(cfg, data(64))
    vision_before = trainer.model.modality_trunks.vision.blocks[0].mlp.fc1.weight.clone()
    curve = losses(trainer.fit().history)
    assert sum(curve[-4:]) / 4 < sum(curve[:3]) / 3
    assert not torch.equal(vision_before, trainer.model.modality_trunks.vision.blocks[0].mlp.fc1.weight)
    assert trainer.temperature != pytest.approx(0.07)  # the temperature learned
    baked = load_state_dict_file(tmp_path / "model.pt")
    scale = float(baked["modality_postprocessors.audio.1.log_logit_scale"].exp())
    assert scale == pytest.approx(1 / trainer.temperature, rel=1e-5)  # exported output scale = 1 / tau


def test_resume_is_bit_for_bit(model_json: Path, tmp_path: Path) -> None:
    # 12 items, 2 micro-steps of 4 per optimizer step: epochs end mid-step; eval and drop-path in between
    over = dict(steps=8, batch_size=8, grad_accum=2, checkpoint_every=3, learn_temperature=True,
                precision="amp", eval_every=5)  # fmt: skip
    full = Trainer(run_config(model_json, tmp_path / "full", **over), data(12), data(8)).fit()
    part_cfg = run_config(model_json, tmp_path / "part", **over)
    first = Trainer(part_cfg, data(12), data(8)).fit(stop_after=7)  # "crash" after step 7
    assert first.step == 7 and first.checkpoint is not None and first.checkpoint.name == "step_00000006.pt"
    second = Trainer(part_cfg, data(12), data(8))
    assert second.resume() == 6
    rest = second.fit()
    assert losses(rest.history) == losses(full.history)[6:]  # exact equality, not approx
    assert losses(first.history)[:6] + losses(rest.history) == losses(full.history)
    steps = [r["step"] for r in read_metrics(tmp_path / "part" / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 9))  # the lines of the lost step 7 were replaced
    full_state = load_state_dict_file(tmp_path / "full" / "model.pt")
    part_state = load_state_dict_file(tmp_path / "part" / "model.pt")
    assert all(torch.equal(full_state[k], part_state[k]) for k in full_state)


def test_checkpoint_is_weights_only_and_refuses_other_config(model_json: Path, tmp_path: Path) -> None:
    cfg = run_config(model_json, tmp_path, steps=2)
    result = Trainer(cfg, data(16)).fit()
    state = torch.load(result.checkpoint, weights_only=True)
    assert state["step"] == 2 and state["config_hash"] == cfg.config_hash()
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "epoch", "batch_in_epoch"} <= set(state)
    assert all(".audio." in k for k in state["model"])  # only the trained tower is stored
    other = Trainer(cfg.with_overrides(lr=1e-2), data(16))
    with pytest.raises(CheckpointError, match="another training config"):
        other.resume()
    moved = Trainer(cfg.with_overrides(out_dir=str(tmp_path / "elsewhere"), progress=True), data(16))
    assert moved.resume(result.checkpoint) == 2  # out_dir and progress are not part of the hash


def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ckpt" / "step_00000001.pt"
    checkpointing.save_atomic({"a": torch.ones(3)}, target)
    real_save = torch.save

    def failing_save(obj: Any, handle: Any) -> None:
        real_save(obj, handle)
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpointing.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        checkpointing.save_atomic({"a": torch.zeros(3)}, target)
    with pytest.raises(OSError):
        checkpointing.save_atomic({"a": torch.zeros(3)}, tmp_path / "ckpt" / "step_00000002.pt")
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no partial or temp file
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(3))  # the old one is intact
    assert checkpointing.latest_checkpoint(target.parent) == target


def test_rng_capture_round_trip() -> None:
    import random

    import numpy as np

    state = checkpointing.capture_rng()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    checkpointing.restore_rng(state)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


def test_metrics_lines_parse_and_plot(model_json: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    cfg = run_config(model_json, tmp_path, steps=4, eval_every=2, plot=True)
    Trainer(cfg, data(16), data(8)).fit()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all({"lr", "temperature", "samples_per_s", "epoch"} <= set(r) for r in train)
    assert [r["step"] for r in records if "eval/vision->audio/R@1" in r] == [2, 4]
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert load_train_config(tmp_path / "train_config.json") == cfg
    assert load_config(tmp_path / "model_config.json").audio.embed_dim == 16


def test_zero_shot_evaluation_with_text_prompts(model_json: Path) -> None:
    model = build_model(load_config(model_json), ["vision", "audio", "text"])

    def tokenize(texts: list[str]) -> torch.Tensor:  # toy ids: a class token, then the max id as EOT
        ids = torch.zeros(len(texts), 8, dtype=torch.int64)
        for row, text in enumerate(texts):
            ids[row, 0], ids[row, 1] = 1 + len(text) % 50, 63
        return ids

    metrics = evaluate_pairs(model, data(8), ("vision", "audio"), ks=(1,), class_names=["a", "bb", "ccc", "dddd"],
                             prompt_template="{}", tokenize=tokenize, batch_size=4)  # fmt: skip
    assert metrics["eval/zero_shot/chance"] == 0.25
    assert 0.0 <= metrics["eval/zero_shot/audio/top1"] <= 1.0 and "eval/zero_shot/vision/top1" in metrics


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"steps": "10"}, "steps: expected an integer"),
        ({"precision": "fp8"}, "precision"),
        ({"pairs": ["vision", "smell"]}, "unknown modality 'smell'"),
        ({"pairs": ["audio", "audio"]}, "two different modalities"),
        ({"batch_size": 10, "grad_accum": 4}, "not divisible by grad_accum"),
        ({"lr": 0}, "lr: must be positive"),
        ({"warmup_steps": 50, "steps": 10}, "exceeds steps"),
        ({"temperature": 0.001}, "below 1 / max_logit_scale"),
        ({"train_data": {"factory": "no_colon"}}, "module:callable"),
        ({"train_data": {"factory": "a:b", "args": {}}}, "unknown key 'args'"),
        ({"betas": [0.9]}, "betas"),
    ],
)
def test_config_validation_errors(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"model": "edge_small", **change}))
    with pytest.raises(ConfigError, match=message) as info:
        load_train_config(path)
    assert "\n" not in str(info.value)


def test_config_file_errors_and_world_size(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such training config"):
        load_train_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable JSON"):
        load_train_config(tmp_path / "bad.json")
    cfg = train_config_from_dict({"model": "edge_small", "batch_size": 12, "grad_accum": 2})
    assert cfg.micro_batch(2) == 3 and cfg.trained == ("audio",)
    with pytest.raises(ConfigError, match="world_size 4"):
        cfg.micro_batch(4)
