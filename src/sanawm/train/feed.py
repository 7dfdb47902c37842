"""Turning a clip source into training batches: ordered draws, worker processes, a replay pool.

Rank r of W consumes the draws r, r + W, r + 2W, ... (its local items 0, 1, 2, ...), so ranks
never see the same clip. Items are prepared by DataLoader workers (CPU) in order, finished on
the device (`source.finish`) and passed through `encode` (for the DiT: VAE latents and packed
cameras; for the VAE: pixels), which returns a dict of tensors with a leading batch dim.

Without a pool, step s uses local items [s B, (s + 1) B). With a pool of P slots, P items are
loaded first, then each step adds `fresh_per_step` = f new items (item i lives in slot i mod P,
so the oldest is replaced; f = 0 keeps the first P forever) and samples B slots uniformly with
the step's generator. Before step s the pool holds exactly items [s f, s f + P): resuming at
step s reloads those and continues bit-identically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

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
    ) -> None:
        self.source = source
        self.encode = encode
        self.batch_size = batch_size
        self.device = device
        self.pool_size = pool_size
        self.fresh = fresh_per_step
        self.workers = workers
        self.rank = rank
        self.world_size = world_size
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

    def _fill_pool(self, step: int) -> None:
        start = step * self.fresh
        self._open(start)
        self._pool = {}
        done = 0
        while done < self.pool_size:
            first, encoded = self._take(min(self.batch_size, self.pool_size - done))
            self._store(first, encoded)
            done += next(iter(encoded.values())).shape[0]

    def _store(self, first: int, encoded: Encoded) -> None:
        """Put items first, first + 1, ... in their slots. A key some items lack (e.g. text
        for clips without a caption) reads as zeros for them."""
        n = next(iter(encoded.values())).shape[0]
        slots = torch.arange(first, first + n, device=self.device) % self.pool_size
        for key, value in encoded.items():
            if key not in self._pool:
                self._pool[key] = torch.zeros((self.pool_size, *value.shape[1:]), dtype=value.dtype, device=self.device)
            self._pool[key][slots] = value
        for key in set(self._pool) - set(encoded):
            self._pool[key][slots] = 0

    def batch(self, step: int, generator: torch.Generator) -> Encoded:
        """Encoded batch for `step` (steps must come in order, or the feed restarts there)."""
        if self._step is None or step != self._step + 1:
            if self.pool_size:
                self._fill_pool(step)
            else:
                self._open(step * self.batch_size)
        self._step = step
        if not self.pool_size:
            return self._take(self.batch_size)[1]
        if self.fresh:
            self._store(*self._take(self.fresh))
        slots = torch.randint(0, self.pool_size, (self.batch_size,), generator=generator, device=generator.device)
        slots = slots.to(self.device)
        return {key: value[slots] for key, value in self._pool.items()}

    def close(self) -> None:
        self._items = None


__all__ = ["ClipFeed", "ClipSource", "Encoded"]
