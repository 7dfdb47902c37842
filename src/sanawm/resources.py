"""Pre-flight estimates: will a generation fit in memory, and how long will it take?

Checked before any model work, so that an impossible request fails in a second with a clear
message instead of being killed by the kernel after minutes, and a run of many hours says so
before it starts.

Memory (peak above the loaded model), from costs measured on the embedded model on the CPU with
`scripts/measure_generation_memory.py` (fresh process per point, peak resident memory, slopes
over 17-129 frames; see docs/generation_limits.md):

* bidirectional sampling: `DIT_WIDTHS_PER_TOKEN` x width x element size per latent token (the
  activations of one forward over the whole clip; softmax attention runs through PyTorch's
  fused attention, so no tokens x tokens matrix is held), plus the latents;
* VAE decode of the whole clip: `VAE_FLOATS_PER_PIXEL` floats per output pixel, plus the
  uint8 frames;
* streaming: the stream cache of the softmax blocks holds the keys and values (also of the
  camera branch, per guidance branch) of every committed token, or with a bounded window
  (the default) of at most its sink plus its recent chunks; GDN state is constant and small.

Time (streaming), measured on this machine: one forward of one chunk is timed (after a warm-up
call) on random inputs of the chunk's shape, which gives the seconds per chunk and a dense
throughput (2 x parameters x tokens per forward / seconds). A chunk costs that forward per
guidance row and step, plus its softmax attention to the cache of earlier chunks
(4 x chunk tokens x cached tokens x width per softmax block) at the same throughput. The
estimate ignores the VAE and text encoder, so it is a little low.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

import torch

#: Peak activation memory of one whole-clip DiT forward, in units of width x element size
#: per latent token (measured on the embedded model, float32, CPU; see module doc).
DIT_WIDTHS_PER_TOKEN = 50.0
#: Peak memory of decoding a whole clip at once, in floats per output pixel (same measurement).
VAE_FLOATS_PER_PIXEL = 52.0
#: Keep this share of the available memory free for everything the estimate leaves out.
MEMORY_HEADROOM = 0.8


@dataclass(frozen=True)
class ClipShape:
    """The sizes a generation works on."""

    frames: int
    height: int
    width: int
    temporal_stride: int
    tokens_per_frame: int
    chunk_size: int
    guidance_rows: int
    """Model rows per sampling step: 1, +1 with text guidance (batched), +1 with camera guidance."""
    steps: int
    cache_frames: int | None = None
    """Most latent frames a stream cache holds (a bounded window: its sink + recent chunks);
    None: every committed frame."""

    @property
    def latent_frames(self) -> int:
        return (self.frames - 1) // self.temporal_stride + 1

    def cached_frames(self, committed: int) -> int:
        """Latent frames the stream cache holds after `committed` latent frames."""
        return committed if self.cache_frames is None else min(committed, self.cache_frames)

    @property
    def tokens(self) -> int:
        return self.latent_frames * self.tokens_per_frame

    @property
    def num_chunks(self) -> int:
        """Streaming chunks: frame 0 plus `chunk_size` frames, then `chunk_size` each; a short
        remainder joins the last chunk."""
        return max(1, (self.latent_frames - 1) // self.chunk_size)

    def with_frames(self, frames: int) -> ClipShape:
        return dataclasses.replace(self, frames=frames)


def bidirectional_bytes(shape: ClipShape, width: int, element_size: int, latent_channels: int) -> int:
    """Estimated peak memory of a bidirectional run above the loaded model."""
    sampling = DIT_WIDTHS_PER_TOKEN * shape.tokens * width * element_size
    latents = 4 * 4 * shape.tokens * latent_channels  # x, noise, velocity, output in float32
    pixels = shape.frames * shape.height * shape.width
    decode = VAE_FLOATS_PER_PIXEL * 4 * pixels + 3 * pixels
    return int(max(sampling, decode) + latents)


def streaming_cache_bytes(shape: ClipShape, width: int, softmax_blocks: int, attn_element_size: int) -> int:
    """Stream cache after the last chunk: keys and values of the main and camera branches in
    every softmax block, per guidance row (bounded by the window, if any)."""
    tokens = shape.cached_frames(shape.latent_frames) * shape.tokens_per_frame
    return int(shape.guidance_rows * softmax_blocks * 4 * width * attn_element_size * tokens)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a run now: the GPU's free memory, or the system's available memory on the
    CPU (`MemAvailable`); None when it cannot be read."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def streaming_seconds(
    shape: ClipShape, chunk_forward_s: float, parameters: int, width: int, softmax_blocks: int
) -> float:
    """Estimated compute time of a streaming run from the measured seconds of one chunk forward
    (see module doc)."""
    chunk_tokens = shape.chunk_size * shape.tokens_per_frame
    flops_per_s = 2 * parameters * chunk_tokens / chunk_forward_s
    # The cache before chunk i (i >= 1) holds frame 0 and i chunks (or what its window keeps).
    n = shape.num_chunks
    if shape.cache_frames is None:
        cached = shape.tokens_per_frame * (n * (n - 1) / 2 * shape.chunk_size + (n - 1))
    else:
        cached = shape.tokens_per_frame * sum(shape.cached_frames(i * shape.chunk_size + 1) for i in range(1, n))
    attention_s = 4 * chunk_tokens * cached * width * softmax_blocks / flops_per_s
    return shape.guidance_rows * shape.steps * (n * chunk_forward_s + attention_s)


def format_bytes(count: float) -> str:
    """"1.2 GB", "350 MB"."""
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{math.ceil(count / 1e6)} MB"
