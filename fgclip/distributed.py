"""torch.distributed for the trainer: process group from torchrun's environment, gathering
embeddings across ranks, and one bucketed gradient all-reduce per optimizer step.

Why no DDP: gradient caching (`fgclip.train.grad_cache`) runs every micro-batch twice (once without
graph, once with) and back-propagates cached embedding gradients; DDP's hooks, `no_sync` and
unused-parameter rules do not fit that pattern. We reduce gradients ourselves, once per step.

Gradient convention: every rank computes the loss of the whole window (all ranks' samples),
so the gradient of a rank's local samples is already exact; the true parameter gradient is the
SUM of the ranks' contributions, which is what `all_reduce_gradients` computes (not the mean).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

# Gradients travel in flat buckets of about this size: few collectives, bounded extra memory.
BUCKET_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None = single process, no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def init_from_env() -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

    NCCL with one GPU per process on CUDA machines, gloo on CPU; without torchrun's variables,
    a single process (world size 1) on the first GPU or the CPU.
    """
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices are visible; "
                f"start at most that many processes per node"
            )
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if env_world <= 1:
        return DistInfo(rank=0, world_size=1, local_rank=0, device=device, backend=None)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, device_id=device if cuda else None)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                    device=device, backend=backend)


def gather_with_local_grad(x: Tensor) -> Tensor:
    """Concatenate `x` of every rank along dim 0 (rank order); gradient flows to the local part.

    All ranks must pass the same shape. Other ranks' parts are constants here: their gradient is
    computed by their own rank, which evaluates the same loss.
    """
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts, dim=0)


def all_reduce_max(value: int, device: torch.device) -> int:
    """The largest `value` over ranks (e.g. a padding size every rank must agree on)."""
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def gather_rows_with_local_grad(x: Tensor) -> Tensor:
    """Like `gather_with_local_grad`, for a first dimension that differs between ranks
    (e.g. the number of regions): pad to the largest, gather, drop the padding."""
    if not is_distributed():
        return x
    counts = torch.zeros(dist.get_world_size(), dtype=torch.long, device=x.device)
    counts[dist.get_rank()] = x.shape[0]
    dist.all_reduce(counts)
    largest = int(counts.max().item())
    padded = torch.cat([x, x.new_zeros((largest - x.shape[0], *x.shape[1:]))]) if largest > x.shape[0] else x
    gathered = gather_with_local_grad(padded)
    keep = [gathered[index * largest: index * largest + int(count)] for index, count in enumerate(counts.tolist())]
    return torch.cat(keep, dim=0)


def all_reduce_gradients(model: nn.Module, bucket_bytes: int = BUCKET_BYTES) -> None:
    """Sum every parameter's .grad over ranks, in flat buckets (one call per optimizer step).

    A parameter with no gradient on some ranks counts as zero there; one with no gradient on
    any rank keeps `.grad = None` (so the optimizer skips it, as in single-process training).
    """
    if not is_distributed():
        return
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        return
    device = parameters[0].device
    has_grad = torch.tensor([p.grad is not None for p in parameters], dtype=torch.int32, device=device)
    dist.all_reduce(has_grad)
    reduced = [p for p, flag in zip(parameters, has_grad.tolist()) if flag > 0]
    for p in reduced:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for bucket in _buckets(reduced, bucket_bytes):
        flat = torch.cat([p.grad.reshape(-1) for p in bucket])
        dist.all_reduce(flat)
        offset = 0
        for p in bucket:
            count = p.grad.numel()
            p.grad.copy_(flat[offset: offset + count].view_as(p.grad))
            offset += count


def _buckets(parameters: list[nn.Parameter], bucket_bytes: int) -> list[list[nn.Parameter]]:
    """Consecutive groups of parameters of one gradient dtype and device, about `bucket_bytes` each."""
    buckets: list[list[nn.Parameter]] = []
    current: list[nn.Parameter] = []
    current_bytes = 0
    for p in parameters:
        size = p.grad.numel() * p.grad.element_size()
        same_kind = not current or (current[0].grad.dtype == p.grad.dtype and current[0].grad.device == p.grad.device)
        if current and (not same_kind or current_bytes + size > bucket_bytes):
            buckets.append(current)
            current, current_bytes = [], 0
        current.append(p)
        current_bytes += size
    if current:
        buckets.append(current)
    return buckets
