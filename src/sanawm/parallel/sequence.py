"""Sequence parallelism for inference: the tokens of one clip spread over the processes of a
torch.distributed group (Ulysses style), with no change to the maths.

Layout. Each process ("rank") holds a band of latent rows of every frame: tokens
(B, T, rows_r * W, C), the "token shard". Bands are as equal as possible (the first H % N
ranks get one row more), so any latent height >= N works. In this layout everything in a block
is token-local except:

- the mixing steps (GDN recurrence, softmax attention, and both camera branches): they are
  independent per head, so one all-to-all turns the token shard into a head shard (this
  rank's H/N heads of *all* tokens, in the single-process token order), the mixing runs
  there exactly as in one process, and a second all-to-all turns the result back;
- the FFN's 3x3 depthwise conv: it reads the row above and below the band (a halo exchange
  of the edge rows);
- the GDN decay gate: it is computed from each frame's mean token (an all-reduce of the
  partial sums).

The temporal convs (GDN key conv, FFN t_conv) act along frames, token by token, so they are
local, and so are their streaming contexts (each rank keeps its rows'). The GDN states and
softmax keys / values of the stream cache are per head: each rank keeps its heads'. RoPE and
the camera transforms are built for all tokens, because they act in the head shard. Text is
replicated; cross-attention from the local queries to it is local.

Collectives are torch's functional collectives (traceable by torch.compile); they run on
NCCL (CUDA) and gloo (CPU). Inference only: no gradients flow through them.

    sp = SequenceParallel.init()                # torchrun: RANK / WORLD_SIZE / LOCAL_RANK
    sp.check(model.config)                      # heads divisible by the world size
    model.sequence_parallel = sp                # every forward is now spread over the group
    out = model(latents, ...)                   # every rank passes the full inputs, gets the full output
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from torch import Tensor

from sanawm.errors import UserInputError


def _done(x: Tensor) -> Tensor:
    """The result of a functional collective, waited for (eager mode returns it as an
    AsyncCollectiveTensor; under torch.compile it is a plain tensor and the wait is traced)."""
    return x.wait() if isinstance(x, funcol.AsyncCollectiveTensor) else x


def _all_gather(x: Tensor, group) -> Tensor:
    """Concatenation along dim 0 of x from every rank, in rank order."""
    gather = getattr(funcol, "all_gather_single", None) or funcol.all_gather_tensor  # renamed in torch 2.13
    return _done(gather(x.contiguous(), 0, group))


@dataclass(frozen=True)
class SequenceParallel:
    """A process group that runs every forward of a model together (see the module doc)."""

    group: dist.ProcessGroup
    rank: int
    world_size: int

    @classmethod
    def from_group(cls, group: dist.ProcessGroup | None = None) -> SequenceParallel:
        """Over `group` (default: the whole, already initialised, default group)."""
        group = group or dist.group.WORLD
        return cls(group, dist.get_rank(group), dist.get_world_size(group))

    @classmethod
    def init(cls, device: torch.device | str | None = None) -> SequenceParallel:
        """Join (or start) the default process group from torchrun's environment (RANK,
        WORLD_SIZE, MASTER_ADDR / MASTER_PORT): NCCL for CUDA devices, gloo otherwise.
        Without that environment this is a group of one process."""
        if not dist.is_initialized():
            device = torch.device(device) if device is not None else local_device()
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(device)  # NCCL's barrier and object collectives use it
            kwargs = {"device_id": device} if device.type == "cuda" else {}
            if "RANK" not in os.environ:  # not under torchrun: a world of this one process
                kwargs.update(store=dist.HashStore(), rank=0, world_size=1)
            dist.init_process_group(backend, **kwargs)
        return cls.from_group()

    @property
    def is_main(self) -> bool:
        """Whether this rank is the one that writes outputs and prints."""
        return self.rank == 0

    def check(self, config, latent_height: int | None = None) -> None:
        """User-facing checks: the heads must split evenly over the ranks, and every rank
        needs at least one latent row."""
        heads, n = config.num_heads, self.world_size
        if heads % n:
            counts = [str(d) for d in range(2, heads + 1) if heads % d == 0]
            choice = " or ".join([", ".join(counts[:-1]), counts[-1]] if len(counts) > 1 else counts)
            raise UserInputError(
                f"sequence parallelism splits the model's {heads} heads over the processes, but {heads} is not "
                f"divisible by {n} processes; use {choice} processes"
            )
        if latent_height is not None and latent_height < n:
            raise UserInputError(
                f"sequence parallelism gives every process at least one latent row, but the clip has "
                f"{latent_height} latent rows for {n} processes"
            )

    def plan(self, height: int, width: int) -> RowShard:
        """The row bands of one forward call on frames of height x width latent pixels."""
        n = self.world_size
        assert height >= n, f"{height} latent rows cannot be spread over {n} ranks"
        base, extra = divmod(height, n)
        starts = [0]
        for r in range(n):
            starts.append(starts[-1] + base + (r < extra))
        return RowShard(self, height, width, tuple(starts))

    def barrier(self) -> None:
        dist.barrier(self.group)

    def broadcast(self, x: Tensor, src: int = 0) -> Tensor:
        """x as held by rank `src`, on every rank (in place)."""
        dist.broadcast(x, src, group=self.group)
        return x


def local_device() -> torch.device:
    """This process's GPU (LOCAL_RANK under torchrun) when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


@dataclass(frozen=True)
class RowShard:
    """The token shard of one call: rank r holds rows [row_starts[r], row_starts[r+1]) of
    every frame. Methods are collectives: every rank calls them in the same order."""

    parallel: SequenceParallel
    height: int
    width: int
    row_starts: tuple[int, ...]

    @property
    def rank(self) -> int:
        return self.parallel.rank

    @property
    def world_size(self) -> int:
        return self.parallel.world_size

    @property
    def group(self):
        return self.parallel.group

    @property
    def rows(self) -> int:
        """Latent rows of this rank's band."""
        return self.row_starts[self.rank + 1] - self.row_starts[self.rank]

    def tokens_of(self, rank: int) -> int:
        """Tokens per frame held by `rank`."""
        return (self.row_starts[rank + 1] - self.row_starts[rank]) * self.width

    # ---- token shard <-> full tensors ------------------------------------------------------

    def local_rows(self, x: Tensor, dim: int = -2) -> Tensor:
        """This rank's band of a tensor with the latent rows along `dim` (e.g. (B, C, T, H, W))."""
        return x.narrow(dim, self.row_starts[self.rank], self.rows)

    def gather_tokens(self, x: Tensor) -> Tensor:
        """(B, T, rows * W, C) on every rank -> (B, T, H * W, C), the same on every rank."""
        B, T, _, C = x.shape
        most = max(self.tokens_of(r) for r in range(self.world_size))
        padded = torch.nn.functional.pad(x, (0, 0, 0, most - x.shape[2]))  # equal sizes for all_gather
        parts = _all_gather(padded[None], self.group)  # (N, B, T, most, C)
        return torch.cat([parts[r, :, :, : self.tokens_of(r)] for r in range(self.world_size)], dim=2)

    # ---- the all-to-alls around a mixing step ----------------------------------------------

    def to_heads(self, xs: Sequence[Tensor], num_heads: int) -> list[Tensor]:
        """Token shard -> head shard, for several tensors at once (one all-to-all).

        Each x is (B, T, S_r, num_heads * D_x) (D_x may differ between them, e.g. 1 for a
        per-head gate); tensors of one dtype travel together. Returns (B, num_heads / N, T * S, D_x) each:
        this rank's heads of every token, tokens in the single-process order."""
        if len({x.dtype for x in xs}) > 1:
            return [self.to_heads([x], num_heads)[0] for x in xs]
        n = self.world_size
        B, T, S_r, _ = xs[0].shape
        widths = [x.shape[-1] // num_heads for x in xs]
        local_heads = num_heads // n
        # (N, B, T, S_r, H/N, sum D): the heads of rank j (group j) first; cat writes it contiguously
        groups = [x.reshape(B, T, S_r, n, local_heads, d).permute(3, 0, 1, 2, 4, 5) for x, d in zip(xs, widths)]
        send = torch.cat(groups, dim=-1).flatten()
        per_token = local_heads * sum(widths)
        out_splits = [B * T * self.tokens_of(j) * per_token for j in range(n)]
        recv = _done(funcol.all_to_all_single(send, out_splits, [send.numel() // n] * n, self.group))
        parts = recv.split(out_splits)
        full = torch.cat(
            [p.view(B, T, self.tokens_of(j), local_heads, -1) for j, p in enumerate(parts)], dim=2
        )  # (B, T, S, H/N, sum D)
        outs = full.flatten(1, 2).transpose(1, 2).split(widths, dim=-1)  # (B, H/N, T*S, D_x)
        return list(outs)

    def to_tokens(self, xs: Sequence[Tensor], frames: int) -> list[Tensor]:
        """Head shard -> token shard (the inverse of `to_heads`): each x (B, H/N, T * S, D_x)
        -> (B, T, S_r, H * D_x) with the heads of all ranks in order."""
        if len({x.dtype for x in xs}) > 1:
            return [self.to_tokens([x], frames)[0] for x in xs]
        n = self.world_size
        B, local_heads, _, _ = xs[0].shape
        widths = [x.shape[-1] for x in xs]
        S = self.height * self.width
        # (B, T, S, H/N, sum D), then the tokens of rank j together
        packed = torch.cat([x.transpose(1, 2).reshape(B, frames, S, local_heads, -1) for x in xs], dim=-1)
        blocks = [packed[:, :, self.row_starts[j] * self.width : self.row_starts[j + 1] * self.width] for j in range(n)]
        send = torch.cat([b.flatten() for b in blocks])
        in_splits = [b.numel() for b in blocks]
        S_r = self.tokens_of(self.rank)
        per_rank = B * frames * S_r * local_heads * sum(widths)
        recv = _done(funcol.all_to_all_single(send, [per_rank] * n, in_splits, self.group))
        # (N, B, T, S_r, H/N, sum D) -> (B, T, S_r, N, H/N, sum D): head groups in rank order
        full = recv.view(n, B, frames, S_r, local_heads, -1).permute(1, 2, 3, 0, 4, 5)
        return [t.reshape(B, frames, S_r, -1) for t in full.split(widths, dim=-1)]

    def local_heads(self, x: Tensor, dim: int = 1) -> Tensor:
        """This rank's heads of a per-head tensor that every rank computed whole."""
        count = x.shape[dim] // self.world_size
        return x.narrow(dim, self.rank * count, count)

    # ---- the two other non-local steps ----------------------------------------------------

    def frame_mean(self, x: Tensor) -> Tensor:
        """(B, T, S_r, C) -> (B, T, C): the mean over all S tokens of each frame (summed in
        float32 or better, returned in x's dtype)."""
        work = torch.promote_types(x.dtype, torch.float32)
        total = _done(funcol.all_reduce(x.sum(dim=2, dtype=work), "sum", self.group))
        return (total / (self.height * self.width)).to(x.dtype)

    def with_neighbour_rows(self, frames: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """frames (N, C, rows, W), this rank's band -> the band with the neighbouring bands'
        edge rows above and below where they exist, and (rows above, rows below) the conv
        must still zero-pad (1 at the top / bottom of the frame, else 0)."""
        edges = torch.stack([frames[:, :, 0], frames[:, :, -1]])  # (2, N, C, W): first and last row
        every = _all_gather(edges[None], self.group)  # (ranks, 2, N, C, W)
        parts, pad_top, pad_bottom = [frames], 1, 1
        if self.rank > 0:
            parts.insert(0, every[self.rank - 1, 1][:, :, None])
            pad_top = 0
        if self.rank < self.world_size - 1:
            parts.append(every[self.rank + 1, 0][:, :, None])
            pad_bottom = 0
        return torch.cat(parts, dim=2), (pad_top, pad_bottom)


__all__ = ["SequenceParallel", "RowShard", "local_device"]
