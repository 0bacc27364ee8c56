"""LoRA fine-tuning of a tower's attention and MLP weights, and merging back into plain weights.

LoRA is attached as a ``torch.nn.utils.parametrize`` parametrization of each target weight
``W`` (shape ``[out, in]``): the module sees ``W + (B @ A) * alpha / rank`` with ``A``
``[rank, in]`` and ``B`` ``[out, rank]`` (B starts at zero, so injection changes nothing).
This covers ``nn.Linear`` weights and the raw ``attn.in_proj_weight`` parameter alike.
:func:`merge_lora` folds the update into ``W`` and removes the parametrization, giving the
original module tree and state_dict keys, so the export stage exports the merged model unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

# Parameter-name suffixes of the transformer blocks (export/layers.py).
DEFAULT_TARGETS: tuple[str, ...] = (
    "attn.in_proj_weight",
    "attn.out_proj.weight",
    "mlp.fc1.weight",
    "mlp.fc2.weight",
)


class LoraDelta(nn.Module):
    """The parametrization ``W -> W + (lora_b @ lora_a) * scaling``.

    Args:
        out_features: rows of W.
        in_features: columns of W.
        rank: LoRA rank r.
        alpha: scaling numerator; the update is multiplied by ``alpha / rank``.
    """

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.lora_a = nn.Parameter(torch.empty(rank, in_features))
        self.lora_b = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scaling = alpha / rank
        self.param_order: tuple[str, ...] = ()  # the owner's parameter order, restored on merge

    def delta(self) -> Tensor:
        """The low-rank update ``[out, in]``."""
        return (self.lora_b @ self.lora_a) * self.scaling

    def forward(self, weight: Tensor) -> Tensor:
        """``[out, in]`` base weight -> adapted weight (same dtype)."""
        return weight + self.delta().to(weight.dtype)


@dataclass(frozen=True)
class ParamCount:
    """Parameter counts (elements, not tensors).

    Attributes:
        trainable: elements with ``requires_grad``.
        total: all elements (base weights counted once, LoRA factors included).
        lora: elements of LoRA factors.
    """

    trainable: int
    total: int
    lora: int


def _owner(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The module holding parameter ``name`` and the attribute name inside it."""
    path, _, attr = name.rpartition(".")
    return (root.get_submodule(path) if path else root), attr


def _matches(name: str, targets: Sequence[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def inject_lora(
    module: nn.Module,
    rank: int = 8,
    alpha: float = 16.0,
    targets: Sequence[str] = DEFAULT_TARGETS,
    *,
    freeze: bool = True,
    train_also: Sequence[str] = (),
) -> list[str]:
    """Attach LoRA to every 2-D parameter of ``module`` whose name ends with a target.

    Args:
        module: a tower (e.g. ``model.modality_trunks["audio"]``) or a whole model.
        rank: LoRA rank r (>= 1).
        alpha: the update is scaled by ``alpha / rank``.
        targets: parameter-name suffixes to adapt (default: attention in/out and MLP fc1/fc2).
        freeze: make every other parameter of ``module`` non-trainable.
        train_also: name prefixes kept trainable despite ``freeze`` (e.g. ``"modality_heads.audio"``).

    Returns:
        The adapted parameter names, in ``named_parameters`` order.

    Raises:
        ValueError: bad rank, nothing matched, or LoRA already injected.
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if has_lora(module):
        raise ValueError("module is already parametrized with LoRA; merge_lora() it first")
    names = [n for n, p in module.named_parameters() if p.ndim == 2 and _matches(n, targets)]
    if not names:
        raise ValueError(f"no 2-D parameter ends with any of {list(targets)}")
    for name in names:
        owner, attr = _owner(module, name)
        weight = getattr(owner, attr)
        delta = LoraDelta(weight.shape[0], weight.shape[1], rank, alpha).to(weight.device)
        delta.param_order = tuple(owner._parameters)
        parametrize.register_parametrization(owner, attr, delta)
    if freeze:
        for name, param in module.named_parameters():
            param.requires_grad_(_is_lora(name) or any(name.startswith(p) for p in train_also))
    return names


def _is_lora(name: str) -> bool:
    return ".lora_a" in name or ".lora_b" in name


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The LoRA factors of ``module`` (to hand to the optimiser)."""
    return [p for n, p in module.named_parameters() if _is_lora(n)]


def lora_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """Only the LoRA factors, keyed as in ``module.state_dict()`` (a small adapter checkpoint)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items() if _is_lora(k)}


def count_parameters(module: nn.Module) -> ParamCount:
    """Trainable / total / LoRA element counts of ``module``."""
    params = list(module.named_parameters())
    return ParamCount(
        trainable=sum(p.numel() for _, p in params if p.requires_grad),
        total=sum(p.numel() for _, p in params),
        lora=sum(p.numel() for n, p in params if _is_lora(n)),
    )


def has_lora(module: nn.Module) -> bool:
    """Whether any submodule still carries a LoRA parametrization."""
    return any(
        isinstance(p, LoraDelta)
        for m in module.modules()
        if parametrize.is_parametrized(m)
        for plist in m.parametrizations.values()
        for p in plist
    )


def _restore_order(module: nn.Module, order: tuple[str, ...]) -> None:
    """Put ``module``'s parameters back in their pre-LoRA order (state_dict key order)."""
    params = module._parameters
    ordered = {k: params[k] for k in order if k in params}
    ordered.update((k, v) for k, v in params.items() if k not in ordered)
    params.clear()
    params.update(ordered)


@torch.no_grad()
def merge_lora(module: nn.Module, *, unfreeze: bool = True) -> nn.Module:
    """Fold every LoRA update into its base weight and remove the parametrizations (in place).

    Afterwards ``module`` has its original parameter names (``state_dict`` keys match the
    model before :func:`inject_lora`) and computes exactly what the LoRA model computed
    (up to float rounding of ``W + BA``).

    Args:
        module: the module given to :func:`inject_lora` (or one containing it).
        unfreeze: make every parameter trainable again (the state of a fresh model).

    Returns:
        ``module``.
    """
    for sub in list(module.modules()):
        if not parametrize.is_parametrized(sub):
            continue
        for attr in list(sub.parametrizations.keys()):
            deltas = [p for p in sub.parametrizations[attr] if isinstance(p, LoraDelta)]
            if deltas:
                parametrize.remove_parametrizations(sub, attr, leave_parametrized=True)
                _restore_order(sub, deltas[0].param_order)
    if unfreeze:
        for param in module.parameters():
            param.requires_grad_(True)
    return module
