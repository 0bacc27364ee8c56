"""InfoNCE against an independent reference, the temperature, the LR schedule and the eval metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.train.distributed import DistInfo, gather_rows, rank_batches  # noqa: E402
from export.train.evaluate import cross_modal_recall, recall_at_k, zero_shot_top1  # noqa: E402
from export.train.loss import LearnableTemperature, info_nce  # noqa: E402
from export.train.schedule import param_groups, warmup_cosine  # noqa: E402

pytestmark = pytest.mark.torch


def reference_info_nce(a: np.ndarray, b: np.ndarray, tau: float) -> float:
    """Plain-loop float64 symmetric InfoNCE (written independently of the torch code)."""
    a = a / np.sqrt((a * a).sum(axis=1, keepdims=True))
    b = b / np.sqrt((b * b).sum(axis=1, keepdims=True))
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        row = [float(a[i] @ b[j]) / tau for j in range(n)]
        col = [float(b[i] @ a[j]) / tau for j in range(n)]
        for scores in (row, col):
            top = max(scores)
            log_sum = top + math.log(sum(math.exp(s - top) for s in scores))
            total += log_sum - scores[i]
    return total / (2 * n)


@pytest.mark.parametrize(("n", "d", "tau", "scale"), [(1, 4, 0.07, 1.0), (8, 16, 0.07, 20.0), (13, 5, 0.5, 0.3)])
def test_info_nce_matches_reference(n: int, d: int, tau: float, scale: float) -> None:
    rng = np.random.default_rng(n * 31 + d)
    a = rng.normal(size=(n, d)) * scale
    b = a + rng.normal(size=(n, d))  # correlated pairs, as in training
    got = info_nce(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32), tau)
    assert got.dtype == torch.float32 and got.ndim == 0
    assert float(got) == pytest.approx(reference_info_nce(a, b, tau), abs=1e-6, rel=1e-6)


def test_info_nce_is_symmetric_and_scale_free() -> None:
    a, b = torch.randn(6, 8), torch.randn(6, 8)
    assert torch.allclose(info_nce(a, b, 0.1), info_nce(b, a, 0.1), atol=1e-6)
    assert torch.allclose(info_nce(5 * a, 0.2 * b, 0.1), info_nce(a, b, 0.1), atol=1e-6)
    eye = torch.eye(4)
    assert float(info_nce(eye, eye, 0.01)) < 1e-6  # perfect alignment, sharp softmax
    with pytest.raises(ValueError, match="two"):
        info_nce(torch.randn(3, 4), torch.randn(4, 4), 0.1)


def test_temperature_gradient_matches_finite_difference() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 8)), rng.normal(size=(6, 8))
    temp = LearnableTemperature(0.2, learnable=True)
    loss = info_nce(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32), temp())
    loss.backward()
    s = math.log(1 / 0.2)
    h = 1e-4
    numeric = (reference_info_nce(a, b, math.exp(-(s + h))) - reference_info_nce(a, b, math.exp(-(s - h)))) / (2 * h)
    assert float(temp.log_logit_scale.grad) == pytest.approx(numeric, rel=1e-3, abs=1e-5)


def test_learnable_temperature_log_parameterisation_and_clamp() -> None:
    temp = LearnableTemperature(0.07, learnable=True, max_logit_scale=100.0)
    assert temp.value == pytest.approx(0.07, rel=1e-6)
    assert isinstance(temp.log_logit_scale, torch.nn.Parameter)
    with torch.no_grad():
        temp.log_logit_scale.fill_(10.0)  # exp(10) > 100: clamped
    assert temp.value == pytest.approx(0.01, rel=1e-6)
    fixed = LearnableTemperature(0.05, learnable=False)
    assert not list(fixed.parameters()) and "log_logit_scale" in fixed.state_dict()
    assert fixed.value == pytest.approx(0.05, rel=1e-6)


def test_warmup_cosine_schedule() -> None:
    f = warmup_cosine(warmup_steps=4, total_steps=14, min_ratio=0.1)
    assert [f(s) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert f(4) == pytest.approx(1.0)
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert f(14) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)
    assert warmup_cosine(0, 10)(0) == pytest.approx(1.0)


def test_param_groups_exclude_norms_biases_embeddings_and_frozen() -> None:
    named = {
        "trunk.blocks.0.mlp.fc1.weight": torch.nn.Parameter(torch.zeros(4, 4)),
        "trunk.blocks.0.mlp.fc1.bias": torch.nn.Parameter(torch.zeros(4)),
        "trunk.blocks.0.norm_1.weight": torch.nn.Parameter(torch.zeros(4)),
        "pre.pos_embedding_helper.pos_embed": torch.nn.Parameter(torch.zeros(1, 3, 4)),
        "pre.cls_token": torch.nn.Parameter(torch.zeros(1, 1, 4)),
        "pre.token_embedding.weight": torch.nn.Parameter(torch.zeros(9, 4)),
        "trunk.blocks.0.attn.bias_k": torch.nn.Parameter(torch.zeros(1, 1, 4)),
        "temperature.log_logit_scale": torch.nn.Parameter(torch.zeros(())),
        "frozen.weight": torch.nn.Parameter(torch.zeros(4, 4), requires_grad=False),
    }
    decay, keep = param_groups(named.items(), weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(named["trunk.blocks.0.mlp.fc1.weight"])]
    assert len(keep["params"]) == 7


def test_single_process_gather_and_batch_order() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_rows(x, DistInfo()) is x
    one = rank_batches(20, 4, DistInfo(), epoch=1, seed=3, shuffle=True)
    halves = [rank_batches(20, 2, DistInfo(r, 2), epoch=1, seed=3, shuffle=True) for r in range(2)]
    assert [h0 + h1 for h0, h1 in zip(*halves, strict=True)] == one  # ranks split each global batch
    assert rank_batches(20, 4, DistInfo(), epoch=1, seed=3, shuffle=True, start=2) == one[2:]
    assert sorted(i for b in one for i in b) == sorted(set(i for b in one for i in b))


def test_recall_at_k_and_zero_shot() -> None:
    gallery = torch.eye(4)
    query = torch.tensor([[1.0, 0, 0, 0], [0, 0.5, 1, 0], [0, 0, 1, 0.1], [0.2, 0, 0, 1]])
    # query 1 prefers gallery 2 (own match ranks below it), the others rank their match first
    assert recall_at_k(query, gallery, (1, 2, 10)) == {1: 0.75, 2: 1.0, 10: 1.0}
    both = cross_modal_recall(query, gallery, ("audio", "vision"), (1,))
    assert both["audio->vision/R@1"] == 0.75 and "vision->audio/R@1" in both
    labels = torch.tensor([0, 2, 2, 1])
    assert zero_shot_top1(query, torch.eye(4), labels) == 0.75
