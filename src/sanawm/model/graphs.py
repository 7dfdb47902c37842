"""CUDA graphs for the fixed-shape streaming chunk step (`ChunkGraphs`).

    graphs = ChunkGraphs(model)                       # one per stream cache
    velocity = graphs(cache, latents, timestep, text, text_mask, raymap, chunk_plucker)
    # = model(latents, ..., cache=cache), replayed from a captured graph when it can be

Why: with a bounded attention window (`StreamCache.window` set) every chunk after the window
has filled has the same shapes (its frames, the sink plus `window` chunks of keys / values, the
GDN states), and a chunk forward at streaming sizes is a few thousand small kernels whose
launch cost is a visible share of its time. The step is captured once per shape and replayed
for every later denoising step of every chunk of that shape.

How: the graph runs `SanaWMTransformer.forward_core` on static input buffers. Before each
replay the call's inputs are copied into them: latents, timestep, text, camera, the RoPE angles
of the chunk's frames (computed eagerly: the frame offset is a Python number, which a graph
would freeze) and, when the cache changed since the last replay (a commit), its blocks' state.
The output is cloned out of the graph's buffer. The first call of a new shape runs eagerly
(it also builds the lazily made kernels and plans a capture must not see being made); the
second captures and replays. Only the newest shape keeps its graph (`max_graphs`): a stream
has one steady shape, and a graph holds its own activation memory.

When it runs eagerly instead: off CUDA, under sequence parallelism, for commit calls, after a
capture failed (a warning says why; `failed` keeps it), and for a cache without a window (every chunk then has new shapes, so a graph would be captured per
chunk and its static copy would double the growing key / value cache). `capture=False` runs
the same static-buffer bookkeeping without capturing; the CPU tests hold that equal to the
plain forward.

Results equal the eager forward's: a replay runs the kernels the capture recorded on the same
shapes (cuDNN / cuBLAS / Triton pick per shape, not per call).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from sanawm.model.transformer import SanaWMTransformer, StreamCache


def tree_map(fn: Callable[[Tensor], Any], node: Any) -> Any:
    """Apply fn to every tensor of a nest of lists, tuples, NamedTuples and dataclasses."""
    if isinstance(node, Tensor):
        return fn(node)
    if node is None or isinstance(node, (int, float, str, bool)):
        return node
    if dataclasses.is_dataclass(node):
        return type(node)(**{f.name: tree_map(fn, getattr(node, f.name)) for f in dataclasses.fields(node)})
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return type(node)(*(tree_map(fn, n) for n in node))
    if isinstance(node, (list, tuple)):
        return type(node)(tree_map(fn, n) for n in node)
    raise TypeError(f"cannot walk a {type(node).__name__}")


def tree_leaves(node: Any) -> list[Tensor]:
    out: list[Tensor] = []
    tree_map(out.append, node)
    return out


def tree_signature(node: Any) -> tuple:
    """Structure and (shape, dtype, device) of every tensor: equal signatures, same graph."""
    if isinstance(node, Tensor):
        return (tuple(node.shape), node.dtype, node.device)
    if node is None or isinstance(node, (int, float, str, bool)):
        return (node,)
    if dataclasses.is_dataclass(node):
        return (type(node).__name__, *(tree_signature(getattr(node, f.name)) for f in dataclasses.fields(node)))
    if isinstance(node, (list, tuple)):
        return (type(node).__name__, *(tree_signature(n) for n in node))
    raise TypeError(f"cannot walk a {type(node).__name__}")


def tree_copy_(dst: Any, src: Any) -> None:
    """Copy every tensor of src into the tensor at the same place of dst (same signature)."""
    for d, s in zip(tree_leaves(dst), tree_leaves(src), strict=True):
        d.copy_(s)


@dataclasses.dataclass
class _Entry:
    """One captured shape: its static inputs and output, and the graph (None: not capturing)."""

    inputs: tuple
    pasts: list
    output: Tensor | None = None
    graph: torch.cuda.CUDAGraph | None = None
    cache_version: tuple | None = None


class ChunkGraphs:
    """Replays the stream-cache forward of `model` from CUDA graphs (see the module doc).

    capture: None captures on CUDA and runs eagerly elsewhere; False keeps the static-buffer
    path but never captures (what the CPU tests run).
    """

    def __init__(self, model: SanaWMTransformer, capture: bool | None = None, max_graphs: int = 1):
        assert max_graphs >= 1, max_graphs
        self.model = model
        self.capture = capture
        self.max_graphs = max_graphs
        self._entries: dict[tuple, _Entry] = {}
        self._seen: set[tuple] = set()
        self.replays = 0
        """Calls served from static buffers (replayed, or run on them when not capturing)."""
        self.captures = 0
        self.failed: str | None = None
        """Why a capture failed (then every later call runs eagerly), or None."""

    def supported(self, cache: StreamCache, device: torch.device) -> bool:
        """Whether calls on this cache and device take the static-buffer path at all."""
        if cache.window is None or self.model.sequence_parallel is not None or self.failed is not None:
            return False
        return self.capture is False or device.type == "cuda"

    def __call__(
        self,
        cache: StreamCache,
        latents: Tensor,
        timestep: Tensor,
        text: Tensor,
        text_mask: Tensor | None = None,
        raymap: Tensor | None = None,
        chunk_plucker: Tensor | None = None,
    ) -> Tensor:
        """`model(latents, ..., cache=cache)` (reads the cache, never commits)."""
        model = self.model
        if not self.supported(cache, latents.device):
            return model(latents, timestep, text, text_mask, raymap, chunk_plucker, cache=cache)
        B, T, H, W = model._validate(latents, timestep, text, text_mask, raymap, chunk_plucker)
        model._resolve_offset(cache, None, False, (B, H, W))
        angles = model.rope_angles(T, H, W, cache.num_frames, latents.device)
        inputs = (latents, timestep, text, text_mask, raymap, chunk_plucker, angles)
        pasts = list(cache.blocks)
        key = tree_signature((inputs, pasts))
        entry = self._entries.get(key)
        if entry is None:
            if key not in self._seen:  # first call of this shape: eager (and the warm-up)
                self._seen.add(key)
                return model(latents, timestep, text, text_mask, raymap, chunk_plucker, cache=cache)
            entry = self._new_entry(key, inputs, pasts)
        tree_copy_(entry.inputs, inputs)
        version = (id(cache), cache.num_frames)  # frames only grow: a commit changes it
        if entry.cache_version != version:  # a commit made new state tensors
            tree_copy_(entry.pasts, pasts)
            entry.cache_version = version
        if entry.graph is None and self._capturing(latents.device):
            try:
                self._capture(entry)
            except RuntimeError as err:  # a kernel that cannot be captured: stay correct, go eager
                self.failed = f"{type(err).__name__}: {str(err).splitlines()[0]}"
                warnings.warn(f"CUDA graph capture failed, the stream runs eagerly: {self.failed}", stacklevel=2)
                self._entries.clear()
                return model(latents, timestep, text, text_mask, raymap, chunk_plucker, cache=cache)
        if entry.graph is not None:
            entry.graph.replay()
            out = entry.output
        else:
            out = self._run(entry)
        self.replays += 1
        return out.clone()

    def _capturing(self, device: torch.device) -> bool:
        return self.capture is not False and device.type == "cuda"

    def _new_entry(self, key: tuple, inputs: tuple, pasts: list) -> _Entry:
        while len(self._entries) >= self.max_graphs:  # drop the oldest graph and its memory
            self._entries.pop(next(iter(self._entries)))
        entry = _Entry(tree_map(torch.clone, inputs), tree_map(torch.clone, pasts))
        self._entries[key] = entry
        return entry

    def _run(self, entry: _Entry) -> Tensor:
        latents, timestep, text, text_mask, raymap, chunk_plucker, angles = entry.inputs
        out, _ = self.model.forward_core(
            latents, timestep, text, text_mask, raymap, chunk_plucker, angles, entry.pasts, None, False
        )
        return out

    def _capture(self, entry: _Entry) -> None:
        # Warm up on a side stream (as torch.cuda.graphs documents), then capture.
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self._run(entry)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA work of other threads (a server's sessions, a decoder thread) may go
        # on while this thread captures.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            entry.output = self._run(entry)
        entry.graph = graph
        self.captures += 1


__all__ = ["ChunkGraphs", "tree_map", "tree_leaves", "tree_signature", "tree_copy_"]
