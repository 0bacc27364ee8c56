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

from export.train.lora import DEFAULT_TARGETS, inject_lora
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


def _is_lora_key(key: str) -> bool:
    return ".lora_a" in key or ".lora_b" in key


def apply_lora(model: nn.Module, trained: Iterable[str], spec: Mapping[str, Any]) -> list[str]:
    """Inject LoRA (``TrainConfig.lora``) into the ``trained`` towers and train only its factors.

    Every parameter outside the LoRA factors is frozen, except the ``train_also`` key prefixes
    (full model keys such as ``modality_heads.audio``; validated by ``TrainConfig``).

    Args:
        model: an ``ImageBindModel``.
        trained: the modalities whose towers learn.
        spec: ``{"rank", "alpha", "targets", "train_also"}`` (missing keys take lora.py's defaults).

    Returns:
        The adapted parameter names (full model keys before injection).

    Raises:
        ConfigError: no parameter of a trained tower matches the targets.
    """
    targets = tuple(spec.get("targets", DEFAULT_TARGETS))
    rank, alpha = int(spec.get("rank", 8)), float(spec.get("alpha", 16.0))
    adapted: list[str] = []
    for modality in trained:
        for dict_name in MODULE_DICTS[:3]:  # postprocessors hold no matrices
            tower: nn.Module = getattr(model, dict_name)[modality]
            matches = [n for n, p in tower.named_parameters() if p.ndim == 2 and _suffix_match(n, targets)]
            if matches:
                inject_lora(tower, rank, alpha, targets, freeze=False)
                adapted += [f"{dict_name}.{modality}.{n}" for n in matches]
    if not adapted:
        raise ConfigError(f"TrainConfig.lora.targets: no 2-D parameter of {list(trained)} ends with {list(targets)}")
    train_also = tuple(spec.get("train_also", ()))
    for name, param in model.named_parameters():
        param.requires_grad_(_is_lora_key(name) or name.startswith(train_also))
    return adapted


def _suffix_match(name: str, targets: Iterable[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def plain_state_dict(model: nn.Module, order: Iterable[str] | None = None) -> dict[str, Tensor]:
    """A detached copy of ``model``'s state dict with every LoRA update folded in (``W + B A``).

    The parametrized entries (``...parametrizations.<w>.original`` and the LoRA factors) become
    the original ``<w>`` keys holding exactly the weight the LoRA model computes with, so the
    result loads into a plain model of the same config. Without LoRA this is a plain copy.

    Args:
        model: the (possibly LoRA-injected) model.
        order: key order of the result (e.g. the keys before injection); default: as found.
    """
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if _is_lora_key(key):
                continue
            path, sep, rest = key.partition(".parametrizations.")
            if sep and rest.endswith(".original"):
                attr = rest.removesuffix(".original")
                out[f"{path}.{attr}"] = getattr(model.get_submodule(path), attr).detach().clone()
            else:
                out[key] = value.detach().clone()
    if order is not None:
        keys = list(order)
        out = {k: out[k] for k in keys if k in out} | {k: v for k, v in out.items() if k not in set(keys)}
    return out


def baked_state_dict(
    model: nn.Module, modality: str, temperature: float, max_scale: float, order: Iterable[str] | None = None
) -> dict[str, Tensor]:
    """The model's plain state dict with ``modality``'s output scale set to ``1 / temperature``.

    ImageBind's fixed output scales are the inverse training temperatures of each
    modality against vision; the trained one is written where the exported model keeps it.
    LoRA updates are merged (:func:`plain_state_dict`); ``order`` as there.
    """
    state = plain_state_dict(model, order)
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
