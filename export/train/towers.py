"""Which towers train: freezing, per-tower train/eval modes, and the module DDP wraps."""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from export.train.loss import LearnableTemperature
from runtime.errors import ConfigError

MODULE_DICTS = ("modality_preprocessors", "modality_trunks", "modality_heads", "modality_postprocessors")


def modality_of(key: str) -> str:
    """``modality_trunks.audio.blocks.0...`` → ``audio``; '' for other keys."""
    parts = key.split(".")
    return parts[1] if len(parts) > 1 and parts[0] in MODULE_DICTS else ""


def freeze_towers(model: nn.Module, trained: Iterable[str]) -> None:
    """Let only the towers in ``trained`` learn; output scales never learn here (the loss owns tau)."""
    keep = set(trained)
    for name, param in model.named_parameters():
        param.requires_grad_(modality_of(name) in keep and not name.startswith("modality_postprocessors."))


def set_tower_modes(model: nn.Module, trained: Iterable[str], training: bool = True) -> None:
    """Put the ``trained`` towers in train mode (when ``training``) and every other tower in eval mode."""
    keep = set(trained)
    model.train(training)
    for dict_name in MODULE_DICTS:
        towers: nn.ModuleDict = getattr(model, dict_name)
        for modality, module in towers.items():
            if modality not in keep:
                module.eval()


class TowerPair(nn.Module):
    """The trainable part of a run: the model's trained towers plus the pair temperature.

    Its ``forward`` is what DistributedDataParallel wraps, so every trainable parameter
    (temperature included) has its gradient averaged across ranks.

    Args:
        model: an ``ImageBindModel`` (frozen towers already frozen).
        trained: the modalities whose towers learn.
        temperature: the pair's softmax temperature.
    """

    def __init__(self, model: nn.Module, trained: tuple[str, ...], temperature: LearnableTemperature) -> None:
        super().__init__()
        self.model = model
        self.trained = trained
        self.temperature = temperature

    def train(self, mode: bool = True) -> TowerPair:
        """Train mode for the trained towers only; frozen towers stay in eval mode."""
        super().train(mode)
        set_tower_modes(self.model, self.trained, mode)
        return self

    def forward(self, inputs: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
        """Embed the trained modalities.

        Args:
            inputs: ``{modality: [B, ...] model-ready tensor}`` for the trained modalities.

        Returns:
            ``({modality: [B, D] float32 unit rows}, 0-d temperature)``.
        """
        out = {m: F.normalize(self.model.encode(m, x).float(), dim=-1) for m, x in inputs.items()}
        return out, self.temperature()


def baked_state_dict(model: nn.Module, modality: str, temperature: float, max_scale: float) -> dict[str, Tensor]:
    """The model's state dict with ``modality``'s output scale set to ``1 / temperature``.

    ImageBind's fixed output scales are the inverse training temperatures of each
    modality against vision; the trained one is written where the exported model keeps it.
    """
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    key = f"modality_postprocessors.{modality}.1.log_logit_scale"
    if key in state:
        state[key] = torch.tensor(math.log(min(1.0 / temperature, max_scale)), dtype=state[key].dtype)
    return state


def dataset_from_spec(spec: Mapping[str, Any], where: str = "dataset") -> Dataset[Any]:
    """Build a dataset from ``{"factory": "module:callable", "kwargs": {...}}``.

    Raises:
        ConfigError: the module or callable cannot be found (one line).
    """
    module_name, _, attr = str(spec["factory"]).partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{where}.factory: cannot load {spec['factory']!r} ({exc})") from None
    return factory(**dict(spec.get("kwargs", {})))
