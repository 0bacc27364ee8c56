"""Distil a large encoder (teacher) into a small edge student on normalised embeddings.

The student learns to point where the teacher points: the loss is ``1 - cos`` (or the
squared distance) between L2-normalised embeddings, with an optional linear projection
of the student's output when the two embedding sizes differ (the projection is trained
with the student and is *not* part of the exported student; keep it, or fold it into a
head, when the student must live in the teacher's space). An optional symmetric InfoNCE
term (``export.train.loss.info_nce``) adds in-batch contrast.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger("edgebind.train.distill")

Encoder = Callable[[Tensor], Tensor]
"""``(B, *row) input -> (B, D) embedding``."""

LOSSES = ("cosine", "mse")


@dataclass(frozen=True)
class DistillConfig:
    """Distillation settings.

    Attributes:
        loss: "cosine" (``1 - cos``) or "mse" (squared distance of unit vectors, = 2 - 2 cos).
        lr: AdamW learning rate of the student (and projection).
        weight_decay: AdamW weight decay.
        grad_clip: max global gradient norm; 0 disables clipping.
        contrastive_weight: weight of an extra symmetric InfoNCE(student, teacher) term; 0 = off.
        temperature: InfoNCE temperature.
        eval_every: evaluate the held-out cosine every this many steps (0: only at the end).
    """

    loss: str = "cosine"
    lr: float = 1e-3
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    contrastive_weight: float = 0.0
    temperature: float = 0.07
    eval_every: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"DistillConfig.loss: {self.loss!r} not in {list(LOSSES)}")


@dataclass
class DistillHistory:
    """What :func:`distill` did.

    Attributes:
        loss: training loss per step.
        eval_steps: steps at which the held-out cosine was measured (0 = before training).
        eval_cosine: mean student-teacher cosine on the held-out inputs at those steps.
        projection: the trained student -> teacher projection, or None when dims match.
    """

    loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_cosine: list[float] = field(default_factory=list)
    projection: nn.Module | None = None


def encoder_fn(model: nn.Module | Encoder, modality: str | None = None) -> Encoder:
    """``model.encode(modality, x)`` for an ImageBind model when ``modality`` is given, else ``model(x)``."""
    if modality is None:
        return model
    encode = model.encode  # type: ignore[union-attr]
    return lambda x: encode(modality, x)


def make_projection(student_dim: int, teacher_dim: int) -> nn.Module | None:
    """A bias-free Linear ``student_dim -> teacher_dim``, or None when they are equal."""
    return None if student_dim == teacher_dim else nn.Linear(student_dim, teacher_dim, bias=False)


def distill_loss(student_emb: Tensor, teacher_emb: Tensor, kind: str = "cosine") -> Tensor:
    """Loss between (B, D) embeddings after L2 normalisation: mean ``1 - cos`` or mean squared distance."""
    s = F.normalize(student_emb.float(), dim=-1)
    t = F.normalize(teacher_emb.float(), dim=-1)
    if kind == "cosine":
        return 1.0 - (s * t).sum(-1).mean()
    return (s - t).pow(2).sum(-1).mean()


@torch.no_grad()
def mean_cosine(teacher: Encoder, student: Encoder, inputs: Tensor, projection: nn.Module | None = None) -> float:
    """Mean cosine between teacher and (projected) student embeddings of ``inputs`` (B, *row)."""
    t = teacher(inputs)
    s = student(inputs)
    if projection is not None:
        s = projection(s)
    return float(F.cosine_similarity(s.float(), t.float(), dim=-1).mean())


def _inputs(batch: Any, key: str | None) -> Tensor:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, Mapping) and key is not None:
        return batch[key]
    if isinstance(batch, (list, tuple)):
        return batch[0]
    raise ValueError(f"cannot take distillation inputs from a {type(batch).__name__}; pass key=")


def _cycle(loader: Iterable[Any]) -> Iterator[Any]:
    """Iterate ``loader`` again and again (a fresh pass each time, so shuffling samplers reshuffle)."""
    for _ in itertools.count():
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("distill: the loader yielded no batch")


def distill(
    teacher: nn.Module | Encoder,
    student: nn.Module,
    loader: Iterable[Any],
    steps: int,
    *,
    modality: str | None = None,
    key: str | None = None,
    config: DistillConfig | None = None,
    eval_inputs: Tensor | None = None,
    device: str | torch.device = "cpu",
) -> DistillHistory:
    """Train ``student`` to reproduce ``teacher``'s embedding directions.

    Args:
        teacher: frozen encoder (run in eval mode under no_grad).
        student: the model to train (its trainable parameters are optimised).
        loader: yields batches: a (B, *row) tensor, a dict (inputs under ``key``, default
            ``modality``) or a tuple (inputs first); cycled until ``steps``.
        steps: optimisation steps.
        modality: call ``teacher.encode(modality, x)`` / ``student.encode(modality, x)``
            (ImageBind models); None calls the modules directly.
        key: dict key of the inputs (defaults to ``modality``).
        config: settings; None uses the defaults.
        eval_inputs: held-out (N, *row) inputs; the mean cosine is recorded before training,
            every ``eval_every`` steps and at the end.
        device: where to train.

    Returns:
        The loss per step, the held-out cosine curve and the projection (if any).
    """
    cfg = config or DistillConfig()
    if isinstance(teacher, nn.Module):
        teacher.to(device).eval().requires_grad_(False)
    student.to(device).train()
    batches = _cycle(loader)
    batch = _inputs(next(batches), key or modality).to(device)
    run = _DistillRun(encoder_fn(teacher, modality), student, encoder_fn(student, modality), cfg, batch)
    held_out = None if eval_inputs is None else eval_inputs.to(device)
    run.evaluate(0, held_out)
    for step in range(1, steps + 1):
        run.history.loss.append(run.step(batch))
        if cfg.eval_every and step % cfg.eval_every == 0 and step != steps:
            run.evaluate(step, held_out)
        if step != steps:
            batch = _inputs(next(batches), key or modality).to(device)
    run.evaluate(steps, held_out)
    student.eval()
    return run.history


class _DistillRun:
    """The state of one :func:`distill` call: encoders, projection, optimiser, history."""

    def __init__(
        self, teacher_fn: Encoder, student: nn.Module, student_fn: Encoder, cfg: DistillConfig, probe: Tensor
    ) -> None:
        self.teacher_fn, self.student, self.student_fn, self.cfg = teacher_fn, student, student_fn, cfg
        with torch.no_grad():
            dims = (student_fn(probe[:1]).shape[-1], teacher_fn(probe[:1]).shape[-1])
        self.projection = make_projection(*dims)
        self.params = [p for p in student.parameters() if p.requires_grad]
        if self.projection is not None:
            self.projection.to(probe.device)
            self.params += list(self.projection.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.history = DistillHistory(projection=self.projection)

    def step(self, x: Tensor) -> float:
        """One optimisation step on inputs ``x`` (B, *row); returns the loss."""
        with torch.no_grad():
            target = self.teacher_fn(x)
        emb = self.student_fn(x)
        if self.projection is not None:
            emb = self.projection(emb)
        loss = distill_loss(emb, target, self.cfg.loss)
        if self.cfg.contrastive_weight > 0:
            from export.train.loss import info_nce

            loss = loss + self.cfg.contrastive_weight * info_nce(emb, target, self.cfg.temperature)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optimizer.step()
        return float(loss.detach())

    def evaluate(self, step: int, inputs: Tensor | None) -> None:
        """Record the held-out mean cosine at ``step`` (student in eval mode meanwhile)."""
        if inputs is None:
            return
        was_training = self.student.training
        self.student.eval()
        cosine = mean_cosine(self.teacher_fn, self.student_fn, inputs, self.projection)
        self.student.train(was_training)
        self.history.eval_steps.append(step)
        self.history.eval_cosine.append(cosine)
        logger.info("distill step %d: held-out cosine %.4f", step, cosine)
