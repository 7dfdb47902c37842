"""Chunks: how the latent frames of a clip are cut for chunk-causal attention and streaming.

This is the only meaning of "chunk" in sanawm (docs/architecture.md has the glossary):

- chunk: a run of consecutive latent frames that is denoised together. Its frames see each
  other (both ways) and every earlier chunk, never a later one. Streaming generates, decodes
  and yields one chunk at a time.
- chunk_size: latent frames per chunk. The first chunk also holds latent frame 0 (the input
  image), so it has chunk_size + 1 frames; a remainder shorter than chunk_size joins the last
  chunk.
- chunk starts: the first frame of every chunk, a list beginning with 0 and increasing
  strictly below the frame count. `None` stands for one chunk over all frames (fully
  bidirectional); `range(T)` makes every frame its own chunk (causal).
- chunk spans: the same chunks as (start, stop) frame ranges, stop exclusive.

Other groupings have other names: frame "blocks" (frames the GDN scan converts at a time),
transformer "blocks", LTX-2 VAE "tiles", Triton "token blocks".
"""

from __future__ import annotations

from collections.abc import Sequence


def chunk_starts_for(num_frames: int, chunk_size: int) -> list[int]:
    """Chunk starts of `num_frames` latent frames cut into chunks of `chunk_size` (see above)."""
    assert chunk_size >= 1 and num_frames >= 1, f"chunk_size {chunk_size} and frame count {num_frames} must be >= 1"
    starts = [0] + list(range(chunk_size + 1, num_frames, chunk_size))
    if len(starts) > 1 and num_frames - starts[-1] < chunk_size:
        starts.pop()
    return starts


def valid_chunk_starts(chunk_starts: Sequence[int], num_frames: int) -> bool:
    """Whether `chunk_starts` begins with 0 and increases strictly below `num_frames`."""
    starts = list(chunk_starts)
    increasing = all(a < b for a, b in zip(starts, starts[1:]))
    return bool(starts) and starts[0] == 0 and increasing and starts[-1] < num_frames


def chunk_spans(chunk_starts: Sequence[int] | None, num_frames: int) -> list[tuple[int, int]]:
    """(start, stop) frame range of every chunk; `None` is one chunk over all frames."""
    starts = [0] if chunk_starts is None else [int(s) for s in chunk_starts]
    assert valid_chunk_starts(starts, num_frames), f"bad chunk starts {starts} for {num_frames} frames"
    return list(zip(starts, starts[1:] + [num_frames]))


__all__ = ["chunk_spans", "chunk_starts_for", "valid_chunk_starts"]
