"""Training configuration: one frozen dataclass read from a JSON file with strict keys.

Every error is one line naming the file and the key (``ConfigError``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from export.config import MODALITIES
from runtime.config_util import DictConfig, check_choices, check_positive, config_from_dict
from runtime.errors import ConfigError

PRECISIONS = ("fp32", "amp", "bf16")
DEVICES = ("auto", "cpu", "cuda")
# Fields that change where or how visibly a run writes, not what it computes: not hashed,
# so a run may be resumed into another directory or without a progress bar.
UNHASHED_FIELDS = ("out_dir", "progress", "plot", "num_workers", "keep_checkpoints")
# Fields added after runs were first checkpointed: hashed only when set, so older checkpoints still resume.
HASHED_WHEN_SET = {"init_openclip": "", "openclip_model": "ViT-H-14", "lora": {}}
LORA_KEYS = ("rank", "alpha", "targets", "train_also")


@dataclass(frozen=True)
class TrainConfig(DictConfig):
    """One contrastive training run (the ImageBind recipe).

    Attributes:
        model: model config preset name or JSON path (see ``export.config.load_config``).
        pairs: ``(anchor, trained)`` modalities, e.g. ``("vision", "audio")``; stage-1
            CLIP-style training uses ``("vision", "text")`` with ``train_anchor``.
        train_anchor: also train the anchor tower (both towers learn); otherwise it is frozen.
        init_checkpoint: official-layout state dict to start from ('' = seeded random init).
        init_openclip: local OpenCLIP checkpoint (file, or folder holding one) whose image and text
            towers replace the built vision/text towers after ``init_checkpoint`` ('' = none; never
            downloads; see ``export.train.openclip``).
        openclip_model: the OpenCLIP architecture of ``init_openclip`` (a name such as ``ViT-H-14``
            or an open_clip model-config JSON path), used to check head counts and options.
        lora: LoRA fine-tuning of the trained tower(s) instead of full fine-tuning ({} = full):
            ``{"rank": 8, "alpha": 16, "targets": [parameter-name suffixes], "train_also":
            [full key prefixes inside the trained towers kept trainable, e.g. "modality_heads.audio"]}``;
            only the LoRA factors (and ``train_also``) learn, ``model.pt`` holds merged plain weights.
        train_data: dataset factory ``{"factory": "module:callable", "kwargs": {...}}``.
        val_data: the same for the evaluation set ({} = no evaluation).
        steps: optimizer steps in the run.
        batch_size: global batch per optimizer step, over all ranks and accumulation
            micro-steps; must divide by ``world_size * grad_accum``. The contrastive
            negatives of one loss are the ``batch_size / grad_accum`` rows of a micro-step.
        grad_accum: micro-steps per optimizer step.
        lr: peak learning rate (AdamW).
        min_lr_ratio: final learning rate as a fraction of ``lr`` (cosine floor).
        warmup_steps: linear warm-up steps from 0 to ``lr``.
        weight_decay: AdamW decay of matrices (never of norms, biases, embeddings, temperature).
        betas: AdamW betas.
        adam_eps: AdamW epsilon.
        grad_clip: max global gradient L2 norm; 0 disables clipping.
        temperature: initial (or fixed) softmax temperature tau of the pair.
        learn_temperature: learn tau (log-parameterised, clamped at ``1 / max_logit_scale``).
        max_logit_scale: upper clamp of ``1 / tau``.
        bake_temperature: write the final ``1 / tau`` into the trained tower's output scale.
        precision: "fp32"; "amp" (float16 + GradScaler on CUDA, bfloat16 on CPU); "bf16".
        device: "auto" (CUDA when available), "cpu" or "cuda".
        seed: seeds model init, data order and every RNG.
        shuffle: reshuffle the training set every epoch.
        num_workers: DataLoader worker processes (randomness inside a dataset should derive
            from the sample index for bit-exact resume with workers).
        cache_anchor: precompute the frozen anchor embeddings once (only valid when the
            anchor inputs are not randomly augmented).
        eval_every: evaluate every N optimizer steps (and at the end); 0 = only at the end.
        eval_batch_size: rows per evaluation forward pass.
        recall_ks: k values of cross-modal recall@k.
        class_names: zero-shot classes (needs a text tower and ``label`` in the val batches).
        prompt_template: zero-shot prompt, ``{}`` replaced by the class name.
        checkpoint_every: save a checkpoint every N optimizer steps (and at the end); 0 = end only.
        keep_checkpoints: newest checkpoints kept on disk.
        log_every: write a metrics line every N optimizer steps.
        progress: show a rich progress bar (rank 0).
        plot: write ``loss.png`` at the end (needs matplotlib).
        out_dir: run directory (checkpoints, metrics, final model).
    """

    model: str
    pairs: tuple[str, ...] = ("vision", "audio")
    train_anchor: bool = False
    init_checkpoint: str = ""
    init_openclip: str = ""
    openclip_model: str = "ViT-H-14"
    lora: dict[str, Any] = field(default_factory=dict)
    train_data: dict[str, Any] = field(default_factory=dict)
    val_data: dict[str, Any] = field(default_factory=dict)
    steps: int = 1000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-4
    min_lr_ratio: float = 0.0
    warmup_steps: int = 0
    weight_decay: float = 0.05
    betas: tuple[float, ...] = (0.9, 0.95)
    adam_eps: float = 1e-6
    grad_clip: float = 1.0
    temperature: float = 0.07
    learn_temperature: bool = False
    max_logit_scale: float = 100.0
    bake_temperature: bool = True
    precision: str = "fp32"
    device: str = "auto"
    seed: int = 0
    shuffle: bool = True
    num_workers: int = 0
    cache_anchor: bool = False
    eval_every: int = 0
    eval_batch_size: int = 64
    recall_ks: tuple[int, ...] = (1, 5, 10)
    class_names: tuple[str, ...] = ()
    prompt_template: str = "{}"
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 1
    progress: bool = True
    plot: bool = True
    out_dir: str = "runs/train"

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_choices(self, {"precision": PRECISIONS, "device": DEVICES})
        check_positive(self, ("steps", "batch_size", "grad_accum", "lr", "temperature", "max_logit_scale"))
        check_positive(self, ("eval_batch_size", "keep_checkpoints", "log_every"))
        if len(self.pairs) != 2 or self.pairs[0] == self.pairs[1]:
            raise ConfigError(f"{name}.pairs: expected two different modalities, got {list(self.pairs)}")
        bad = [m for m in self.pairs if m not in MODALITIES]
        if bad:
            raise ConfigError(f"{name}.pairs: unknown modality {bad[0]!r} (expected one of {', '.join(MODALITIES)})")
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"{name}.batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"{name}.betas: expected two numbers in [0, 1), got {list(self.betas)}")
        self._check_ranges(name)
        _check_data_spec(f"{name}.train_data", self.train_data, required=False)
        _check_data_spec(f"{name}.val_data", self.val_data, required=False)
        _check_lora(f"{name}.lora", self.lora, self.trained)

    def _check_ranges(self, name: str) -> None:
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"{name}.min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")
        nonneg = ("warmup_steps", "weight_decay", "grad_clip", "adam_eps", "num_workers", "eval_every")
        for key in (*nonneg, "checkpoint_every"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{name}.{key}: must not be negative, got {getattr(self, key)}")
        if self.warmup_steps > self.steps:
            raise ConfigError(f"{name}.warmup_steps {self.warmup_steps} exceeds steps {self.steps}")
        if 1.0 / self.temperature > self.max_logit_scale:
            raise ConfigError(f"{name}.temperature {self.temperature} is below 1 / max_logit_scale")
        if any(not isinstance(k, int) or k <= 0 for k in self.recall_ks):
            raise ConfigError(f"{name}.recall_ks: expected positive integers, got {list(self.recall_ks)}")
        if self.class_names and "{}" not in self.prompt_template:
            raise ConfigError(f"{name}.prompt_template: must contain '{{}}', got {self.prompt_template!r}")

    @property
    def anchor(self) -> str:
        """The anchor modality (first of ``pairs``)."""
        return self.pairs[0]

    @property
    def target(self) -> str:
        """The trained modality (second of ``pairs``)."""
        return self.pairs[1]

    @property
    def trained(self) -> tuple[str, ...]:
        """The modalities whose towers receive gradients."""
        return tuple(self.pairs) if self.train_anchor else (self.target,)

    def micro_batch(self, world_size: int) -> int:
        """Rows per rank per micro-step.

        Raises:
            ConfigError: ``batch_size`` does not divide by ``world_size * grad_accum``.
        """
        per_step = self.batch_size // self.grad_accum
        if per_step % world_size:
            raise ConfigError(
                f"TrainConfig.batch_size {self.batch_size} is not divisible by world_size {world_size} "
                f"x grad_accum {self.grad_accum}"
            )
        return per_step // world_size

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of every field that changes the computation."""
        data = {k: v for k, v in self.to_dict().items() if k not in UNHASHED_FIELDS}
        data = {k: v for k, v in data.items() if k not in HASHED_WHEN_SET or v != HASHED_WHEN_SET[k]}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def with_overrides(self, **changes: Any) -> TrainConfig:
        """A validated copy with some fields replaced (e.g. ``out_dir``)."""
        return replace(self, **changes)


def _check_data_spec(label: str, spec: Any, required: bool) -> None:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{label}: expected an object {{\"factory\": \"module:callable\", \"kwargs\": {{}}}}")
    if not spec:
        if required:
            raise ConfigError(f"{label}: a dataset is required")
        return
    unknown = sorted(set(spec) - {"factory", "kwargs"})
    if unknown:
        raise ConfigError(f"{label}: unknown key {unknown[0]!r} (valid keys: factory, kwargs)")
    factory = spec.get("factory")
    if not isinstance(factory, str) or factory.count(":") != 1:
        raise ConfigError(f"{label}.factory: expected 'module:callable', got {factory!r}")
    if not isinstance(spec.get("kwargs", {}), Mapping):
        raise ConfigError(f"{label}.kwargs: expected an object, got {spec.get('kwargs')!r}")


def _check_lora(label: str, spec: Any, trained: tuple[str, ...]) -> None:
    """Validate ``TrainConfig.lora`` (one line naming the key)."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{label}: expected an object {{\"rank\": 8, \"alpha\": 16, \"targets\": [...]}}")
    if not spec:
        return
    unknown = sorted(set(spec) - set(LORA_KEYS))
    if unknown:
        raise ConfigError(f"{label}: unknown key {unknown[0]!r} (valid keys: {', '.join(LORA_KEYS)})")
    rank = spec.get("rank", 8)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"{label}.rank: expected a positive integer, got {rank!r}")
    alpha = spec.get("alpha", 16.0)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ConfigError(f"{label}.alpha: expected a positive number, got {alpha!r}")
    for key in ("targets", "train_also"):
        value = spec.get(key, [])
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{label}.{key}: expected a list of non-empty strings, got {value!r}")
    if "targets" in spec and not spec["targets"]:
        raise ConfigError(f"{label}.targets: must not be empty (omit it for the default targets)")
    for prefix in spec.get("train_also", []):
        parts = prefix.split(".")
        if len(parts) < 2 or parts[1] not in trained or parts[0] == "modality_postprocessors":
            raise ConfigError(
                f"{label}.train_also: {prefix!r} is not inside a trained tower "
                f"(expected e.g. 'modality_heads.{trained[-1]}')"
            )


def train_config_from_dict(data: Mapping[str, Any], where: str = "TrainConfig") -> TrainConfig:
    """Build a :class:`TrainConfig` from a JSON object (unknown keys and bad values raise ConfigError)."""
    return config_from_dict(TrainConfig, data, where)


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a :class:`TrainConfig` JSON file.

    Raises:
        ConfigError: missing or unreadable file, unknown key, bad value (one line naming file and key).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such training config file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable JSON file ({exc})") from None
    return train_config_from_dict(data, where=path.name)


def save_train_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write ``cfg`` as JSON readable by :func:`load_train_config`."""
    Path(path).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
