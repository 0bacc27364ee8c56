"""Transformer building blocks whose parameter names match the official checkpoint.

Everything is batch-first ``[B, L, E]``. Attention is written as explicit matmuls
(no ``nn.MultiheadAttention``) so that ``torch.export`` / ONNX see plain ops, while
the parameters keep the official names (``in_proj_weight``, ``bias_k``, ...).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BLOCK_LN_EPS = 1e-6  # pre-LN, block norms and head norms
STEM_LN_EPS = 1e-5  # LayerNorm right after a patch stem (torch default)


class Attention(nn.Module):
    """Multi-head self-attention with the parameter layout of ``nn.MultiheadAttention``.

    Args:
        dim: width E.
        num_heads: heads H; head width d = E / H.
        bias_kv: append the learned ``bias_k``/``bias_v`` rows (already in projected
            space) to keys and values, making them one longer than the queries.
    """

    def __init__(self, dim: int, num_heads: int, bias_kv: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        if bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, dim))
            self.bias_v = nn.Parameter(torch.empty(1, 1, dim))
        else:
            self.bias_k = self.bias_v = None
        self.out_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise like torch's MHA: xavier-uniform projections, zero biases, normal bias_kv."""
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)
        if self.bias_k is not None and self.bias_v is not None:
            nn.init.xavier_normal_(self.bias_k)
            nn.init.xavier_normal_(self.bias_v)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """Attend.

        Args:
            x: ``[B, L, E]`` float.
            attn_mask: optional additive float mask ``[L, L]`` (query row, key column).

        Returns:
            ``[B, L, E]``.
        """
        batch, length, dim = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        if self.bias_k is not None and self.bias_v is not None:
            k = torch.cat([k, self.bias_k.expand(batch, 1, dim)], dim=1)
            v = torch.cat([v, self.bias_v.expand(batch, 1, dim)], dim=1)
            if attn_mask is not None:
                attn_mask = F.pad(attn_mask, (0, 1))
        q, k, v = (self._split_heads(t) for t in (q, k, v))
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
        if attn_mask is not None:
            scores = scores + attn_mask
        out = torch.matmul(scores.softmax(dim=-1), v)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))

    def _split_heads(self, t: Tensor) -> Tensor:
        """``[B, L, E]`` → ``[B, H, L, d]``."""
        batch, length, dim = t.shape
        return t.reshape(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)


class Mlp(nn.Module):
    """``fc1`` (E→4E) → exact erf GELU → ``fc2`` (4E→E)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``[..., E]`` → ``[..., E]``."""
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Per-sample stochastic depth; identity in eval mode or at rate 0."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        """Drop whole residual branches with probability ``rate`` (training only)."""
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm_1(x))`` then ``x + mlp(norm_2(x))``."""

    def __init__(self, dim: int, num_heads: int, bias_kv: bool, drop_path: float) -> None:
        super().__init__()
        self.attn = Attention(dim, num_heads, bias_kv)
        self.drop_path = DropPath(drop_path)
        self.norm_1 = nn.LayerNorm(dim, eps=BLOCK_LN_EPS)
        self.mlp = Mlp(dim, 4 * dim)
        self.norm_2 = nn.LayerNorm(dim, eps=BLOCK_LN_EPS)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """``[B, L, E]`` → ``[B, L, E]``; ``attn_mask`` as in :class:`Attention`."""
        x = x + self.drop_path(self.attn(self.norm_1(x), attn_mask))
        return x + self.drop_path(self.mlp(self.norm_2(x)))


class Trunk(nn.Module):
    """The transformer encoder of one modality (official key layout of the "simple transformer").

    Args:
        dim: width E.
        num_blocks: blocks N.
        num_heads: heads H.
        bias_kv: see :class:`Attention`.
        drop_path: maximum stochastic-depth rate; block i gets ``i / (N - 1)`` of it.
        pre_norm: LayerNorm before the first block (vision only).
    """

    def __init__(
        self,
        dim: int,
        num_blocks: int,
        num_heads: int,
        *,
        bias_kv: bool = False,
        drop_path: float = 0.0,
        pre_norm: bool = False,
    ) -> None:
        super().__init__()
        first = nn.LayerNorm(dim, eps=BLOCK_LN_EPS) if pre_norm else nn.Identity()
        self.pre_transformer_layer = nn.Sequential(first)
        rates = [drop_path * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
        self.blocks = nn.ModuleList(Block(dim, num_heads, bias_kv, r) for r in rates)

    def forward(self, tokens: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """``[B, L, E]`` → ``[B, L, E]``; the same mask is given to every block."""
        x = self.pre_transformer_layer(tokens)
        for block in self.blocks:
            x = block(x, attn_mask)
        return x


class SelectToken(nn.Module):
    """Pick one token: ``[B, L, E]`` → ``[B, E]``."""

    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x[:, index, :]``."""
        return x[:, self.index, :]


class Normalize(nn.Module):
    """L2-normalise the last axis (norm clamped at 1e-12, as ``F.normalize``)."""

    def forward(self, x: Tensor) -> Tensor:
        """``[B, D]`` → unit rows ``[B, D]``."""
        return F.normalize(x, dim=-1, p=2.0)


class LogitScale(nn.Module):
    """Multiply by ``min(exp(log_logit_scale), max_scale)``.

    Args:
        init_scale: the initial scale (not its log).
        learnable: store ``log_logit_scale`` as a parameter (text) instead of a buffer.
        max_scale: upper clip of the scale.
    """

    def __init__(self, init_scale: float, learnable: bool, max_scale: float = 100.0) -> None:
        super().__init__()
        self.max_scale = max_scale
        value = torch.tensor(math.log(init_scale))
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)

    def scale(self) -> Tensor:
        """The effective 0-d scale tensor."""
        return torch.clamp(self.log_logit_scale.exp(), max=self.max_scale)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, D]`` → ``[B, D]`` scaled."""
        return self.scale() * x


def init_weights(module: nn.Module) -> None:
    """Truncated-normal(0.02) Linear weights, zero biases, unit LayerNorms (use with ``apply``)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
