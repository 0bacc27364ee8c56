"""The symmetric InfoNCE loss of ImageBind/CLIP and a learnable softmax temperature."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def info_nce(a: Tensor, b: Tensor, temperature: float | Tensor) -> Tensor:
    """Symmetric InfoNCE between paired rows: row i of ``a`` matches row i of ``b``.

    Rows are L2-normalised first, the logits are ``a @ b.T / temperature`` and the
    loss is the mean of the cross-entropy over rows (a→b) and over columns (b→a).

    Args:
        a: ``[N, D]`` float embeddings (any scale).
        b: ``[N, D]`` float embeddings paired with ``a``.
        temperature: softmax temperature tau > 0 (float or 0-d tensor, may carry grad).

    Returns:
        0-d float32 loss.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"info_nce needs two [N, D] tensors of one shape, got {list(a.shape)} and {list(b.shape)}")
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    logits = (a @ b.T) / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class LearnableTemperature(nn.Module):
    """Softmax temperature tau stored as ``log(1 / tau)`` (CLIP's logit scale), clamped.

    ``forward()`` returns ``1 / min(exp(log_logit_scale), max_logit_scale)``. When not
    learnable the log scale is a buffer (it still travels in the state dict).

    Args:
        init_temperature: initial tau (e.g. 0.07).
        learnable: make ``log_logit_scale`` a trainable parameter.
        max_logit_scale: upper clamp of ``1 / tau`` (CLIP uses 100).
    """

    def __init__(self, init_temperature: float = 0.07, learnable: bool = True, max_logit_scale: float = 100.0) -> None:
        super().__init__()
        if init_temperature <= 0 or max_logit_scale <= 0:
            raise ValueError("temperature and max_logit_scale must be positive")
        self.max_logit_scale = max_logit_scale
        value = torch.tensor(math.log(1.0 / init_temperature))
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)

    def logit_scale(self) -> Tensor:
        """0-d ``1 / tau`` after the clamp."""
        return torch.clamp(self.log_logit_scale.exp(), max=self.max_logit_scale)

    def forward(self) -> Tensor:
        """0-d tau."""
        return 1.0 / self.logit_scale()

    @property
    def value(self) -> float:
        """The current tau as a Python float (for logging)."""
        return float(self.forward().detach())
