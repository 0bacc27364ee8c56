"""torchrun / DistributedDataParallel plumbing: process-group setup, gradient-correct gathers, data order.

With ``WORLD_SIZE`` > 1 in the environment (``torchrun``), :func:`init_distributed`
joins the ``env://`` process group (nccl on CUDA, gloo on CPU). The data order is a
pure function of (seed, epoch) so a run resumes at any batch and every rank agrees on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import Tensor


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 writes checkpoints and metrics).
        world_size: number of processes.
        local_rank: rank on this node (selects the CUDA device).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when a process group with more than one rank is in use."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0


def init_distributed(use_cuda: bool) -> DistInfo:
    """Join the ``env://`` process group when ``WORLD_SIZE`` > 1; a single process otherwise.

    Args:
        use_cuda: pick nccl and bind ``cuda:LOCAL_RANK``; gloo on the CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    if not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    return info


def cleanup_distributed() -> None:
    """Leave the process group if one was joined."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op for one process)."""
    if info.enabled:
        tdist.barrier()


class _GatherRows(torch.autograd.Function):
    """all_gather along dim 0 whose backward hands each rank the summed gradient of its own rows.

    Every rank computes the same loss over the gathered matrix; summing the per-rank
    gradients of rank r's rows (all_reduce, then slice) gives ``world_size`` times the
    single-process gradient, which DDP's gradient averaging brings back to exactly it.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:  # type: ignore[override]
        world = tdist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(world)]
        tdist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]  # type: ignore[attr-defined]
        ctx.rank = tdist.get_rank()  # type: ignore[attr-defined]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        tdist.all_reduce(grad)
        start = ctx.rank * ctx.rows  # type: ignore[attr-defined]
        return grad[start : start + ctx.rows]  # type: ignore[attr-defined]


def gather_rows(x: Tensor, info: DistInfo) -> Tensor:
    """Concatenate ``x`` ``[n, D]`` from every rank in rank order → ``[world * n, D]``.

    The local rows keep their autograd history (see :class:`_GatherRows`); with one
    process ``x`` is returned unchanged.
    """
    if not info.enabled:
        return x
    if not x.requires_grad:
        parts = [torch.empty_like(x) for _ in range(info.world_size)]
        tdist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)
    return _GatherRows.apply(x)


def epoch_order(num_items: int, epoch: int, seed: int, shuffle: bool) -> Tensor:
    """The dataset order of ``epoch``: a permutation drawn from ``seed + epoch`` (or ``arange``)."""
    if not shuffle:
        return torch.arange(num_items)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=gen)


def rank_batches(
    num_items: int, micro_batch: int, info: DistInfo, *, epoch: int, seed: int, shuffle: bool, start: int = 0
) -> list[list[int]]:
    """This rank's index lists for the micro-steps ``start, start+1, ...`` of ``epoch``.

    Global micro-batch ``j`` is ``order[j*G : (j+1)*G]`` with ``G = micro_batch * world_size``
    (the last partial one dropped); rank r takes its r-th contiguous slice, so the rows
    gathered over ranks are in the single-process order.

    Raises:
        ValueError: the dataset holds fewer than ``G`` items.
    """
    global_batch = micro_batch * info.world_size
    per_epoch = num_items // global_batch
    if per_epoch == 0:
        raise ValueError(f"dataset has {num_items} items, fewer than one global micro-batch of {global_batch}")
    order = epoch_order(num_items, epoch, seed, shuffle).tolist()
    out = []
    for j in range(start, per_epoch):
        lo = j * global_batch + info.rank * micro_batch
        out.append(order[lo : lo + micro_batch])
    return out


def batches_per_epoch(num_items: int, micro_batch: int, info: DistInfo) -> int:
    """Number of full global micro-batches in one epoch."""
    return num_items // (micro_batch * info.world_size)
