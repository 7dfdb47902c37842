"""Turning a clip source into training batches: ordered draws, worker processes, a replay pool.

Everything is counted in *global* items and batch positions, so that a run on W processes with
B / W clips each sees exactly the clips (and per-sample random numbers) of a run on one process
with B clips. Global item i is the source's draw i; rank r of W prepares the items r, r + W,
r + 2W, ... (its local items 0, 1, 2, ...), so ranks never see the same clip. Items are prepared
by DataLoader workers (CPU) in order, finished on the device (`source.finish`) and passed
through `encode` (for the DiT: VAE latents and packed cameras; for the VAE: pixels), which
returns a dict of tensors with a leading batch dim.

Batch positions: step s of a global batch of G = W b clips has positions k = 0 .. G - 1; rank r
holds positions r, r + W, ... (b of them). Every batch carries `sample_seed` (b,) int64: the
seed of position k at step s, a function of (seed, step, k) only, from which a stage draws that
sample's noise (`sample_generators`).

Without a pool, position k of step s is item s G + k. With a pool of P slots (global; each rank
holds the P / W slots congruent to its rank modulo W), P items are loaded first, then each step
adds `fresh_per_step` = F new items (item i lives in slot i mod P, so the oldest is replaced;
F = 0 keeps the first P forever), and position k takes a uniformly drawn slot among
k, k + G, k + 2G, ... < P (stratified: no slot twice in a step, and the slot is always held by
the rank that holds the position, whatever W divides G). Before step s the pool holds exactly
items [s F, s F + P): resuming at step s, on any number of processes, reloads those and
continues bit-identically. P must be a multiple of W (F need not be: a rank then adds
one clip more on some steps than on others).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sanawm.errors import UserInputError
from sanawm.train.data import Clip, ClipBatch

Encoded = dict[str, torch.Tensor]


class ClipSource(Protocol):
    def prepare(self, draw: int) -> Clip: ...

    def finish(self, clips: list[Clip], device: torch.device) -> ClipBatch: ...


class _DrawStream(IterableDataset):
    """Local items start, start + 1, ... of one rank as (local index, prepared clip)."""

    def __init__(self, source: ClipSource, start: int, rank: int, world_size: int) -> None:
        self.source = source
        self.start = start
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[tuple[int, Clip]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:
            torch.set_num_threads(1)  # the workers already use the cores in parallel
        index = self.start + worker
        while True:
            try:
                yield index, self.source.prepare(index * self.world_size + self.rank)
            except UserInputError as err:  # sent as data: a worker's traceback is no message
                yield index, _Failure(str(err))
            index += workers


class _Failure:
    """A user error met while preparing an item (re-raised in the training process)."""

    def __init__(self, message: str) -> None:
        self.message = message


def _as_is(item):
    return item


def position_seed(seed: int, step: int, position: int, stream: int) -> int:
    """A 63-bit seed that depends on (seed, step, batch position, stream) only."""
    state = np.random.SeedSequence([int(seed), int(stream), int(step), int(position)]).generate_state(1, np.uint64)
    return int(state[0] >> 1)


SAMPLE_STREAM = 2  # per-sample noise of the stages (stream 0 / 1: `loop.step_generators`)
SLOT_STREAM = 3  # which pool slot a position takes
PAIR_STREAM = 4  # which ODE pair a position takes (`distill_ode.PairFeed`)


def sample_generators(seeds: torch.Tensor, device: torch.device) -> list[torch.Generator]:
    """One generator on `device` per sample of a batch, from its `sample_seed`."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds.tolist()]


Generators = torch.Generator | list[torch.Generator]


def randn_rows(shape: tuple[int, ...], generators: Generators) -> torch.Tensor:
    """Normal draws of `shape` on the generators' device. A list of per-sample generators
    (`sample_generators`, one per row of `shape`) draws row i from generator i alone, so a row
    does not depend on the other rows of the batch; a single generator draws the whole tensor."""
    if isinstance(generators, torch.Generator):
        return torch.randn(shape, generator=generators, device=generators.device)
    assert len(generators) == shape[0], f"{len(generators)} generators for {shape[0]} rows"
    return torch.cat([torch.randn((1, *shape[1:]), generator=g, device=g.device) for g in generators])


class ClipFeed:
    """Batches of encoded clips for steps start, start + 1, ... (see module doc)."""

    def __init__(
        self,
        source: ClipSource,
        encode: Callable[[ClipBatch], Encoded],
        *,
        batch_size: int,
        device: torch.device,
        pool_size: int = 0,
        fresh_per_step: int = 1,
        workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        extra_per_step: int = 0,
    ) -> None:
        """`batch_size` is this rank's (b); `pool_size`, `fresh_per_step` and `extra_per_step`
        (samples a stage makes itself each step, e.g. the VAE's synthetic clips: positions
        G, G + 1, ... get seeds `extra_seed`, dealt to the ranks like the clips) count over all ranks."""
        global_batch = batch_size * world_size
        if extra_per_step % world_size:
            raise UserInputError(f"{extra_per_step} extra samples per step do not split over {world_size} processes")
        if pool_size % world_size:
            raise UserInputError(
                f"data.pool_size ({pool_size}) counts clips over all {world_size} processes and must be a multiple "
                "of that number"
            )
        if pool_size and pool_size < global_batch:
            raise UserInputError(f"data.pool_size ({pool_size}) must be >= the global batch ({global_batch})")
        self.source = source
        self.encode = encode
        self.batch_size = batch_size
        self.device = device
        self.pool_size = pool_size
        self.fresh = fresh_per_step
        self.workers = workers
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.global_batch = global_batch
        self.local_pool = pool_size // world_size
        self.extra = extra_per_step
        self._items: Iterator[tuple[int, Clip]] | None = None
        self._next_index = 0
        self._step: int | None = None
        self._pool: Encoded = {}
        self.clips_loaded = 0
        """Items prepared, finished and encoded so far (for throughput logging)."""

    def _open(self, start: int) -> None:
        stream = _DrawStream(self.source, start, self.rank, self.world_size)
        loader = DataLoader(
            stream,
            batch_size=None,
            num_workers=self.workers,
            collate_fn=_as_is,
            persistent_workers=False,
        )
        self._items = iter(loader)
        self._next_index = start

    def _take(self, count: int) -> tuple[int, Encoded]:
        """The next `count` items, encoded; returns (first local index, tensors)."""
        first = self._next_index
        clips = []
        for _ in range(count):
            index, clip = next(self._items)
            if isinstance(clip, _Failure):
                raise UserInputError(clip.message)
            if index != self._next_index:  # DataLoader keeps worker order; this guards it
                raise RuntimeError(f"data stream out of order: got item {index}, expected {self._next_index}")
            clips.append(clip)
            self._next_index += 1
        with torch.no_grad():
            encoded = self.encode(self.source.finish(clips, self.device))
        self.clips_loaded += count
        return first, encoded

    def _local(self, item: int) -> int:
        """How many of this rank's items lie below global item `item` (its first local index there)."""
        return -(-(item - self.rank) // self.world_size)

    def _fill_pool(self, step: int) -> None:
        self._open(self._local(step * self.fresh))
        self._pool = {}
        done = 0
        while done < self.local_pool:
            first, encoded = self._take(min(self.batch_size, self.local_pool - done))
            self._store(first, encoded)
            done += next(iter(encoded.values())).shape[0]

    def _store(self, first: int, encoded: Encoded) -> None:
        """Put items first, first + 1, ... in their slots. A key some items lack (e.g. text
        for clips without a caption) reads as zeros for them."""
        n = next(iter(encoded.values())).shape[0]
        # Local item j is global item j W + r, in global slot (j W + r) mod P = local slot j mod (P / W).
        slots = torch.arange(first, first + n, device=self.device) % self.local_pool
        for key, value in encoded.items():
            if key not in self._pool:
                shape = (self.local_pool, *value.shape[1:])
                self._pool[key] = torch.zeros(shape, dtype=value.dtype, device=self.device)
            self._pool[key][slots] = value
        for key in set(self._pool) - set(encoded):
            self._pool[key][slots] = 0

    def positions(self) -> list[int]:
        """This rank's positions in the global batch of a step."""
        return [j * self.world_size + self.rank for j in range(self.batch_size)]

    def batch(self, step: int, generator: torch.Generator | None = None) -> Encoded:
        """Encoded batch for `step` (steps must come in order, or the feed restarts there), with
        `sample_seed` (see module doc). `generator` is unused: every random choice here is a
        function of (seed, step, position), so that it does not depend on the world size."""
        if self._step is None or step != self._step + 1:
            if self.pool_size:
                self._fill_pool(step)
            else:
                self._open(step * self.batch_size)
        self._step = step
        positions = self.positions()
        seeds = {"sample_seed": self._seeds(step, positions)}
        if self.extra:
            extra = range(self.global_batch + self.rank, self.global_batch + self.extra, self.world_size)
            seeds["extra_seed"] = self._seeds(step, extra)
        if not self.pool_size:
            return {**self._take(self.batch_size)[1], **seeds}
        # This step's new global items are [s F + P, (s + 1) F + P); this rank's share of them:
        new = self._local((step + 1) * self.fresh + self.pool_size) - self._local(step * self.fresh + self.pool_size)
        if new:
            self._store(*self._take(new))
        slots = []
        for k in positions:
            choices = (self.pool_size - 1 - k) // self.global_batch + 1  # slots k, k + G, ... below P
            pick = np.random.default_rng(position_seed(self.seed, step, k, SLOT_STREAM)).integers(choices)
            slots.append((k + int(pick) * self.global_batch) // self.world_size)  # global -> local slot
        index = torch.tensor(slots, device=self.device)
        return {**{key: value[index] for key, value in self._pool.items()}, **seeds}

    def _seeds(self, step: int, positions) -> torch.Tensor:
        return torch.tensor([position_seed(self.seed, step, k, SAMPLE_STREAM) for k in positions], dtype=torch.int64)

    def close(self) -> None:
        self._items = None


__all__ = ["ClipFeed", "ClipSource", "Encoded", "Generators", "position_seed", "randn_rows", "sample_generators"]
