"""One training script from 1 to N processes: torchrun environment, device choice, wrapping.

Under `torchrun` (WORLD_SIZE > 1) the process group is NCCL on CUDA and gloo on CPU; each rank
uses GPU `LOCAL_RANK`. A plain `python` run is a world of one and wraps nothing.

Wrapping: "ddp" (`DistributedDataParallel`; all ranks hold the full model) or "fsdp" (FSDP2
`fully_shard` on every transformer block and then on the root: parameters, gradients and
optimizer state are sharded over the ranks). Checkpoints always hold full, unsharded tensors
(`full_state_dict`), so a run can resume on a different number of processes or strategy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from sanawm.device import choose_device
from sanawm.errors import UserInputError


@dataclass
class DistContext:
    """Where this process sits: rank, world size, its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_agree(self, flag: bool) -> bool:
        """True when `flag` is True on any rank (e.g. "stop now"), the same answer on every rank."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def mean(self, value: float) -> float:
        """Mean of a float over the ranks."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size


def setup(device: str = "") -> DistContext:
    """Initialise the process group when launched by torchrun; pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device:
        dev = choose_device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=dev if dev.type == "cuda" else None)
    return DistContext(rank, world_size, local_rank, dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, ctx: DistContext, strategy: str, blocks: list[nn.Module], find_unused: bool) -> nn.Module:
    """Wrap `model` for multi-process training (returns it unchanged in a world of one).

    `blocks` are the sub-modules FSDP2 shards one by one (the transformer blocks); DDP needs
    `find_unused` when some steps leave parameters unused (camera dropout).
    """
    if not ctx.distributed:
        return model
    if strategy == "ddp":
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused)
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
        for block in blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    raise UserInputError(f"unknown distributed strategy {strategy!r}; use 'ddp' or 'fsdp'")


def average_gradients(module: nn.Module, ctx: DistContext) -> None:
    """Replace the gradients of `module` by their mean over the ranks (for replicas trained
    without a DDP wrapper; every rank must hold gradients for the same parameters)."""
    if not ctx.distributed:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    for dtype in sorted({g.dtype for g in grads}, key=str):
        group = [g for g in grads if g.dtype == dtype]
        flat = torch.cat([g.reshape(-1) for g in group])
        dist.all_reduce(flat)
        flat /= ctx.world_size
        offset = 0
        for g in group:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def unwrap(model: nn.Module) -> nn.Module:
    """The user module inside a DDP wrapper (FSDP2 modifies modules in place)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


__all__ = ["DistContext", "average_gradients", "setup", "teardown", "unwrap", "wrap"]
