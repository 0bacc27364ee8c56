"""LoRA injection/merge on an ImageBind tower, and distillation of a teacher tower into a smaller student."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from export.config import config_from_json  # noqa: E402
from export.model import build_model  # noqa: E402
from export.train.distill import DistillConfig, distill, distill_loss, mean_cosine  # noqa: E402
from export.train.lora import (  # noqa: E402
    count_parameters,
    has_lora,
    inject_lora,
    lora_parameters,
    lora_state_dict,
    merge_lora,
)

pytestmark = pytest.mark.torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny towers run fastest on one thread; two threads on a busy 2-core machine oversubscribe badly."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def imu_model(embed_dim: int, out_dim: int, blocks: int = 2, seed: int = 0):
    """An ImageBind model with only a small IMU tower (rows (6, 80))."""
    tower = {"embed_dim": embed_dim, "num_blocks": blocks, "num_heads": 2}
    small = {"embed_dim": 8, "num_blocks": 1, "num_heads": 2}
    cfg = config_from_json(
        {
            "name": f"imu_{embed_dim}",
            "out_embed_dim": out_dim,
            "vision": {**small, "input_shape": [3, 2, 28, 28]},
            "text": small,
            "audio": small,
            "depth": small,
            "thermal": small,
            "imu": {**tower, "input_shape": [6, 80], "drop_path": 0.0},
        }
    )
    torch.manual_seed(seed)
    return build_model(cfg, ["imu"])


def test_lora_trains_only_adapters_and_merges_to_the_same_function() -> None:
    model = imu_model(32, 16)
    keys = list(model.state_dict())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = inject_lora(model, rank=4, alpha=8.0)
    assert len(names) == 8 and all("modality_trunks.imu.blocks" in n for n in names)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_a" in n or ".lora_b" in n for n in trainable)
    counts = count_parameters(model)
    assert counts.trainable == counts.lora == sum(p.numel() for p in lora_parameters(model)) > 0
    x = torch.randn(8, 6, 80)
    with torch.no_grad():
        base_out = model.encode("imu", x)
    optimizer = torch.optim.AdamW(lora_parameters(model), lr=1e-2)
    target = torch.randn(8, 16)
    model.train()
    for _ in range(5):
        loss = (1 - torch.nn.functional.cosine_similarity(model.encode("imu", x), target)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        lora_out = model.encode("imu", x)
    assert not torch.allclose(lora_out, base_out, atol=1e-4)  # the adapters learned something
    for key, value in model.state_dict().items():  # base weights untouched while training
        if key.endswith(".original"):
            assert torch.equal(value, before[key.replace("parametrizations.", "").replace(".original", "")])
    adapters = lora_state_dict(model)
    assert adapters and all(".lora_" in k for k in adapters)
    merge_lora(model)
    assert not has_lora(model) and list(model.state_dict()) == keys
    with torch.no_grad():
        merged_out = model.encode("imu", x)
    torch.testing.assert_close(merged_out, lora_out, atol=1e-5, rtol=0)
    fresh = imu_model(32, 16, seed=1)
    fresh.load_state_dict(model.state_dict(), strict=True)  # a plain model loads the merged weights
    with torch.no_grad():
        torch.testing.assert_close(fresh.encode("imu", x), lora_out, atol=1e-5, rtol=0)


def test_lora_rejects_bad_rank_no_match_and_double_injection() -> None:
    model = imu_model(16, 8, blocks=1)
    with pytest.raises(ValueError, match="rank"):
        inject_lora(model, rank=0)
    with pytest.raises(ValueError, match="no 2-D parameter"):
        inject_lora(model, targets=("nothing.weight",))
    inject_lora(model, rank=2, train_also=("modality_heads.imu",))
    assert any(n.startswith("modality_heads.imu") and p.requires_grad for n, p in model.named_parameters())
    with pytest.raises(ValueError, match="already parametrized"):
        inject_lora(model, rank=2)


def test_distillation_raises_held_out_student_teacher_cosine() -> None:
    teacher = imu_model(64, 32, blocks=2, seed=0)
    student = imu_model(16, 12, blocks=1, seed=1)  # smaller and a different output size
    gen = torch.Generator().manual_seed(0)
    train = torch.randn(256, 6, 80, generator=gen)
    held_out = torch.randn(64, 6, 80, generator=gen)
    loader = [{"imu": train[i : i + 32]} for i in range(0, 256, 32)]
    history = distill(
        teacher,
        student,
        loader,
        steps=40,
        modality="imu",
        config=DistillConfig(lr=3e-3, eval_every=20),
        eval_inputs=held_out,
    )
    assert history.projection is not None and len(history.loss) == 40
    assert history.eval_steps == [0, 20, 40]
    start, end = history.eval_cosine[0], history.eval_cosine[-1]
    assert end > start + 0.2, history.eval_cosine
    assert sum(history.loss[-5:]) < sum(history.loss[:5])
    with torch.no_grad():
        again = mean_cosine(
            lambda x: teacher.encode("imu", x), lambda x: student.encode("imu", x), held_out, history.projection
        )
    assert again == pytest.approx(end, abs=1e-6)


def test_distill_same_dims_with_mse_and_contrast_on_tensor_batches() -> None:
    teacher = imu_model(32, 16, seed=0)
    student = imu_model(16, 16, blocks=1, seed=2)
    data = torch.randn(64, 6, 80, generator=torch.Generator().manual_seed(3))
    history = distill(
        teacher,
        student,
        [data[:32], data[32:]],
        steps=6,
        modality="imu",
        config=DistillConfig(loss="mse", contrastive_weight=0.1, lr=1e-3),
        eval_inputs=data[:16],
    )
    assert history.projection is None and len(history.loss) == 6 and history.eval_steps == [0, 6]
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    assert float(distill_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(distill_loss(a, b, "mse"), 2 * distill_loss(a, b, "cosine"))
    with pytest.raises(ValueError, match="loss"):
        DistillConfig(loss="kl")
