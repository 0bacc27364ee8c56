"""AdamW parameter groups and the linear warm-up + cosine decay learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

# Parameter name fragments that never get weight decay (besides every 0-d/1-d tensor:
# norms, biases, scales): learned embeddings and tokens.
NO_DECAY_NAMES = ("pos_embed", "cls_token", "token_embedding", "bias_k", "bias_v", "log_logit_scale")


def decays(name: str, param: nn.Parameter) -> bool:
    """Whether ``param`` (named ``name``) gets weight decay: matrices and kernels only."""
    if param.ndim <= 1:
        return False
    return not any(fragment in name for fragment in NO_DECAY_NAMES)


def param_groups(named: Iterable[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict[str, object]]:
    """Split trainable parameters into a decayed and a non-decayed AdamW group.

    Args:
        named: ``(name, parameter)`` pairs; frozen ones (``requires_grad`` False) are skipped.
        weight_decay: decay of the first group.

    Returns:
        ``[{"params": [...], "weight_decay": wd}, {"params": [...], "weight_decay": 0.0}]``
        (empty groups dropped), in a deterministic order.
    """
    decay: list[nn.Parameter] = []
    keep: list[nn.Parameter] = []
    for name, param in named:
        if param.requires_grad:
            (decay if decays(name, param) else keep).append(param)
    groups: list[dict[str, object]] = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": keep, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    named: Iterable[tuple[str, nn.Parameter]],
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-6,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`.

    Raises:
        ValueError: nothing is trainable.
    """
    groups = param_groups(named, weight_decay)
    if not groups:
        raise ValueError("no trainable parameters")
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> Callable[[int], float]:
    """LR multiplier of step ``s`` (the count of optimizer steps already taken).

    Linear ``(s + 1) / (warmup + 1)`` during the first ``warmup_steps`` steps (never 0, so
    step 0 already learns), then a cosine from 1 down to ``min_ratio`` at ``total_steps``,
    held there afterwards.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        span = max(total_steps - warmup_steps, 1)
        progress = min((step - warmup_steps) / span, 1.0)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`warmup_cosine`; call ``step()`` once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup_steps, total_steps, min_ratio))
