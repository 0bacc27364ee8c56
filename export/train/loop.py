"""The contrastive trainer: one tower (or two) learns to match a frozen anchor with symmetric InfoNCE.

Single process or DistributedDataParallel under ``torchrun``; mixed precision, gradient
accumulation and clipping, atomic checkpoints that resume bit for bit, evaluation,
JSONL metrics, a progress bar and a loss plot. Rank 0 alone writes files.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, default_collate

from export.checkpoint import CheckpointError, load_checkpoint, load_state_dict_file
from export.config import load_config, save_config
from export.model import build_model
from export.train import checkpointing as ckpt
from export.train.config import TrainConfig, save_train_config
from export.train.distributed import DistInfo, barrier, gather_rows, rank_batches
from export.train.evaluate import Tokenize, clip_tokenizer, embed_dataset, evaluate_pairs, modality_input
from export.train.loss import LearnableTemperature, info_nce
from export.train.metrics import MetricsLog, ProgressBar, plot_losses, read_metrics
from export.train.openclip import init_from_openclip
from export.train.schedule import build_optimizer, build_scheduler
from export.train.towers import TowerPair, apply_lora, baked_state_dict, freeze_towers, modality_of, plain_state_dict
from runtime.errors import ConfigError


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        step: optimizer steps done in total (including those before a resume).
        history: the metric records logged by this call (training lines and eval lines).
        eval: the last evaluation metrics ({} when there is no validation set).
        checkpoint: the last checkpoint written (rank 0), if any.
        model_path: the exported flat state dict (rank 0, at the end of the run), if any.
    """

    step: int
    history: list[dict[str, Any]] = field(default_factory=list)
    eval: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    model_path: Path | None = None


def resolve_device(name: str, dist: DistInfo) -> torch.device:
    """``auto`` → CUDA when available; CUDA picks ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("TrainConfig.device: 'cuda' requested but CUDA is not available")
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def _seed_all(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Trains ``cfg.trained`` towers of an ImageBind-family model against ``cfg.anchor``.

    Args:
        cfg: the run configuration.
        train_data: map-style dataset of dicts (``image``, ``<modality>``, ``index``, ...).
        val_data: optional evaluation dataset (same format; ``label`` enables zero-shot).
        model: a prebuilt model; None builds ``cfg.model`` (seeded) and loads ``cfg.init_checkpoint``
            then ``cfg.init_openclip`` (vision/text towers).
        dist: this process's place in a torchrun job (default: single process).
        tokenize: ``list[str] -> [N, L] int64`` for captions and zero-shot prompts
            (default: the CLIP tokenizer, created when first needed).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        train_data: Dataset[Any],
        val_data: Dataset[Any] | None = None,
        *,
        model: nn.Module | None = None,
        dist: DistInfo | None = None,
        tokenize: Tokenize | None = None,
    ) -> None:
        if cfg.cache_anchor and cfg.train_anchor:
            raise ConfigError("TrainConfig.cache_anchor: the anchor tower trains, its embeddings cannot be cached")
        self.cfg = cfg
        self.dist = dist or DistInfo()
        self.device = resolve_device(cfg.device, self.dist)
        self.train_data, self.val_data = train_data, val_data
        self._tokenize = tokenize
        self.model = (model if model is not None else self._build_model()).to(self.device)
        freeze_towers(self.model, cfg.trained)
        self._plain_keys = list(self.model.state_dict())  # model.pt key order (LoRA renames keys)
        self.lora_params = apply_lora(self.model, cfg.trained, cfg.lora) if cfg.lora else []
        temperature = LearnableTemperature(cfg.temperature, cfg.learn_temperature, cfg.max_logit_scale)
        self.pair = TowerPair(self.model, cfg.trained, temperature.to(self.device)).train()
        self.engine: nn.Module = self.pair
        if self.dist.enabled:
            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.engine = DistributedDataParallel(self.pair, device_ids=ids, broadcast_buffers=False)
        self.optimizer = build_optimizer(
            self.pair.named_parameters(), cfg.lr, cfg.weight_decay, tuple(cfg.betas), cfg.adam_eps  # type: ignore[arg-type]
        )
        self.scheduler = build_scheduler(self.optimizer, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
        use_scaler = cfg.precision == "amp" and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.micro_batch = cfg.micro_batch(self.dist.world_size)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.out_dir = Path(cfg.out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.metrics = MetricsLog(self.out_dir / "metrics.jsonl")
        self._anchor_cache: Tensor | None = None
        self._last_checkpoint: Path | None = None
        _seed_all(cfg.seed + self.dist.rank)

    # ---- setup -------------------------------------------------------------------------------

    def _build_model(self) -> nn.Module:
        modalities = set(self.cfg.pairs) | ({"text"} if self.cfg.class_names else set())
        torch.manual_seed(self.cfg.seed)
        model = build_model(load_config(self.cfg.model), modalities)
        if self.cfg.init_checkpoint:
            load_checkpoint(model, load_state_dict_file(self.cfg.init_checkpoint))
        if self.cfg.init_openclip:
            init_from_openclip(model, self.cfg.openclip_model, self.cfg.init_openclip)
        return model

    @property
    def tokenize(self) -> Tokenize:
        """The text tokenizer (the CLIP one unless given)."""
        if self._tokenize is None:
            self._tokenize = clip_tokenizer(self.model.input_shape("text")[0])  # type: ignore[operator]
        return self._tokenize

    @property
    def temperature(self) -> float:
        """The current softmax temperature tau of the pair."""
        return self.pair.temperature.value

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.cfg.precision == "fp32":
            return contextlib.nullcontext()
        half = self.cfg.precision == "amp" and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.float16 if half else torch.bfloat16)

    def _input(self, batch: Mapping[str, Any], modality: str) -> Tensor:
        tokenize = self.tokenize if modality == "text" else None
        return modality_input(batch, modality, tokenize).to(self.device, non_blocking=True)

    # ---- data ----------------------------------------------------------------------------------

    def _micro_batches(self) -> Iterator[dict[str, Any]]:
        """Collated micro-batches from the saved position onwards, epoch after epoch.

        Every loader gets its own seeded generator so creating one never draws from the
        global RNG (a resumed run would otherwise diverge).
        """
        num_items = len(self.train_data)  # type: ignore[arg-type]
        while True:
            index_lists = rank_batches(
                num_items, self.micro_batch, self.dist,
                epoch=self.epoch, seed=self.cfg.seed, shuffle=self.cfg.shuffle, start=self.batch_in_epoch,
            )  # fmt: skip
            if hasattr(self.train_data, "set_epoch"):
                self.train_data.set_epoch(self.epoch)  # per-item random streams of export.train.data
            gen = torch.Generator().manual_seed(self.cfg.seed * 7919 + self.epoch)
            collate = getattr(self.train_data, "collate_fn", default_collate)
            loader = DataLoader(self.train_data, batch_sampler=index_lists, num_workers=self.cfg.num_workers,
                                collate_fn=collate, generator=gen)  # fmt: skip
            for batch in loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0

    @torch.no_grad()
    def _anchor_embeddings(self, batch: Mapping[str, Any]) -> Tensor:
        """Unit anchor rows ``[b, D]`` of a frozen anchor (cached or computed without grads)."""
        if self._anchor_cache is not None:
            return self._anchor_cache[torch.as_tensor(batch["index"]).long()].to(self.device)
        with self._autocast():
            emb = self.model.encode(self.cfg.anchor, self._input(batch, self.cfg.anchor))  # type: ignore[operator]
        return F.normalize(emb.float(), dim=-1)

    def _build_anchor_cache(self) -> Tensor:
        embs, _ = embed_dataset(self.model, self.train_data, [self.cfg.anchor], batch_size=self.cfg.eval_batch_size,
                                device=self.device,
                                tokenize=self.tokenize if self.cfg.anchor == "text" else self._tokenize)  # fmt: skip
        self.pair.train()  # embed_dataset leaves every tower in train mode
        return embs[self.cfg.anchor]

    # ---- one step ------------------------------------------------------------------------------

    def _micro_loss(self, batch: Mapping[str, Any]) -> Tensor:
        inputs = {m: self._input(batch, m) for m in self.cfg.trained}
        with self._autocast():
            embs, tau = self.engine(inputs)
        anchor = embs[self.cfg.anchor] if self.cfg.train_anchor else self._anchor_embeddings(batch)
        a = gather_rows(anchor.float(), self.dist)
        b = gather_rows(embs[self.cfg.target].float(), self.dist)
        return info_nce(a, b, tau.float())

    def _optimizer_step(self, batches: Iterator[dict[str, Any]]) -> float:
        """Accumulate ``grad_accum`` micro-steps, clip, step AdamW and the schedule; mean loss."""
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        accum = self.cfg.grad_accum
        for i in range(accum):
            batch = next(batches)
            sync = i == accum - 1 or not self.dist.enabled
            with contextlib.nullcontext() if sync else self.engine.no_sync():  # type: ignore[operator]
                loss = self._micro_loss(batch)
                self.scaler.scale(loss / accum).backward()
            total += float(loss.detach())
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return total / accum

    # ---- the run -------------------------------------------------------------------------------

    def fit(self, stop_after: int | None = None) -> TrainResult:
        """Train until ``cfg.steps`` (or until ``stop_after`` total steps, e.g. to simulate a crash).

        At the end of the run (rank 0): final evaluation, a checkpoint, ``model.pt``
        (flat official-layout state dict, trained temperature baked into the output
        scale), ``model_config.json``, ``train_config.json`` and ``loss.png``.
        """
        cfg, result = self.cfg, TrainResult(self.step)
        if cfg.cache_anchor and self._anchor_cache is None:
            self._anchor_cache = self._build_anchor_cache()
        end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
        finished_before = self.step >= cfg.steps and (self.out_dir / "model.pt").exists()
        batches = self._micro_batches()
        with ProgressBar(cfg.steps, self.step, cfg.progress and self.dist.is_main) as bar:
            while self.step < end:
                started = time.perf_counter()
                loss = self._optimizer_step(batches)
                self.step += 1
                record = self._train_record(loss, time.perf_counter() - started)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self._log(record, result)
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                    result.eval = self.evaluate(result)
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save_checkpoint()
                bar.update(self.step, f"loss {loss:.4f} lr {record['lr']:.2e}")
        if self.step >= cfg.steps and not finished_before:  # resuming a finished run changes nothing
            result.eval = self.evaluate(result)
            self.save_checkpoint()
            result.model_path = self.export_model()
            self._plot()
        result.step, result.checkpoint = self.step, self._last_checkpoint
        return result

    def _train_record(self, loss: float, seconds: float) -> dict[str, Any]:
        return {
            "step": self.step, "epoch": self.epoch, "loss": loss,
            "lr": self.scheduler.get_last_lr()[0], "temperature": self.temperature,
            "samples_per_s": self.cfg.batch_size / max(seconds, 1e-9), "step_s": seconds,
        }  # fmt: skip

    def _log(self, record: dict[str, Any], result: TrainResult) -> None:
        result.history.append(record)
        if self.dist.is_main:
            self.metrics.append(record)

    def evaluate(self, result: TrainResult | None = None) -> dict[str, float]:
        """Recall@k (and zero-shot top-1) on ``val_data``, computed on rank 0; {} without a val set."""
        if self.val_data is None:
            return {}
        metrics: dict[str, float] = {}
        if self.dist.is_main:
            tokenize = self.tokenize if self.cfg.class_names or "text" in self.cfg.pairs else self._tokenize
            metrics = evaluate_pairs(
                self.model, self.val_data, (self.cfg.anchor, self.cfg.target), ks=self.cfg.recall_ks,
                class_names=self.cfg.class_names, prompt_template=self.cfg.prompt_template, tokenize=tokenize,
                batch_size=self.cfg.eval_batch_size, device=self.device,
            )  # fmt: skip
            self.pair.train()
            record = {"step": self.step, **metrics}
            self.metrics.append(record)
            if result is not None:
                result.history.append(record)
        barrier(self.dist)
        return metrics

    # ---- checkpoints ---------------------------------------------------------------------------

    def _rank_rng(self) -> list[dict[str, Any]]:
        state = ckpt.capture_rng()
        if not self.dist.enabled:
            return [state]
        states: list[Any] = [None] * self.dist.world_size
        tdist.all_gather_object(states, state)
        return states

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step_XXXXXXXX.pt`` atomically (call on every rank; rank 0 writes).

        Holds the trained towers' weights, temperature, optimizer, scheduler, scaler,
        every rank's RNG states, the data position and the config hash.
        """
        rng = self._rank_rng()
        path: Path | None = None
        if self.dist.is_main:
            trained = set(self.cfg.trained)
            state = {
                "format": ckpt.CHECKPOINT_FORMAT, "step": self.step, "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch, "world_size": self.dist.world_size,
                "config_hash": self.cfg.config_hash(), "config": self.cfg.to_dict(),
                "model": {k: v for k, v in self.model.state_dict().items() if modality_of(k) in trained},
                "temperature": self.pair.temperature.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "rng": rng,
            }  # fmt: skip
            path = ckpt.save_atomic(state, ckpt.checkpoint_path(self.checkpoint_dir, self.step))
            ckpt.prune_checkpoints(self.checkpoint_dir, self.cfg.keep_checkpoints)
            self._last_checkpoint = path
        barrier(self.dist)
        return path

    def resume(self, path: str | Path | None = None) -> int:
        """Continue from ``path`` (default: the newest checkpoint in ``out_dir``); returns the step.

        Raises:
            CheckpointError: no checkpoint, another config, or weights that do not fit.
        """
        path = Path(path) if path is not None else ckpt.latest_checkpoint(self.checkpoint_dir)
        if path is None:
            raise CheckpointError(f"{self.checkpoint_dir}: no checkpoint to resume from")
        state = ckpt.load_training_checkpoint(path, self.cfg.config_hash())
        missing = [k for k in state["model"] if k not in self.model.state_dict()]
        if missing:
            raise CheckpointError(f"{path}: unexpected model key {missing[0]}")
        self.model.load_state_dict(state["model"], strict=False)
        self.pair.temperature.load_state_dict(state["temperature"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        rng = state["rng"]
        ckpt.restore_rng(rng[self.dist.rank] if len(rng) == self.dist.world_size else rng[0])
        if self.dist.is_main:
            self.metrics.truncate_after(self.step)
        self._last_checkpoint = path
        return self.step

    def export_model(self) -> Path | None:
        """Rank 0: write ``model.pt`` (flat state dict of the built towers) and ``model_config.json``.

        LoRA updates are merged into plain weights under the original keys, so the export
        stage (``python -m export bundle --checkpoint model.pt``) reads it like any checkpoint.
        """
        if not self.dist.is_main:
            return None
        state = plain_state_dict(self.model, self._plain_keys)
        if self.cfg.bake_temperature:
            state = baked_state_dict(self.model, self.cfg.target, self.temperature, self.cfg.max_logit_scale,
                                     self._plain_keys)  # fmt: skip
        path = ckpt.save_atomic(state, self.out_dir / "model.pt")
        save_config(self.model.config, self.out_dir / "model_config.json")  # type: ignore[arg-type]
        save_train_config(self.cfg, self.out_dir / "train_config.json")
        return path

    def _plot(self) -> None:
        if self.dist.is_main and self.cfg.plot and self.metrics.path.exists():
            plot_losses(read_metrics(self.metrics.path), self.out_dir / "loss.png")
