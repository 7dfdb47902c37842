"""`sanawm.resources`: the pre-flight estimates, against hand counts."""

import pytest

from sanawm.resources import (
    DIT_WIDTHS_PER_TOKEN,
    VAE_FLOATS_PER_PIXEL,
    ClipShape,
    bidirectional_bytes,
    streaming_cache_bytes,
    streaming_seconds,
)


def _shape(frames, chunk_size=3, rows=2, steps=24):
    return ClipShape(frames=frames, height=128, width=128, temporal_stride=4, tokens_per_frame=256,
                     chunk_size=chunk_size, guidance_rows=rows, steps=steps)  # fmt: skip


def _naive_chunks(latent_frames, chunk_size):
    """The streaming sampler's chunks, counted the long way: frame 0 + a chunk, then chunks; a
    remainder shorter than a chunk joins the last one."""
    starts = [0]
    start = chunk_size + 1
    while start < latent_frames:
        starts.append(start)
        start += chunk_size
    if len(starts) > 1 and latent_frames - starts[-1] < chunk_size:
        starts.pop()
    return len(starts)


@pytest.mark.parametrize("frames", [5, 9, 17, 33, 37, 41, 65, 401])
@pytest.mark.parametrize("chunk_size", [1, 2, 3])
def test_chunk_count_matches_the_sampler_rule(frames, chunk_size):
    shape = _shape(frames, chunk_size)
    assert shape.latent_frames == (frames - 1) // 4 + 1
    assert shape.num_chunks == _naive_chunks(shape.latent_frames, chunk_size)


def test_memory_grows_with_tokens_and_pixels():
    small, large = _shape(33), _shape(65)
    assert large.tokens == 17 * 256 and small.tokens == 9 * 256
    # The decode dominates at this size: 52 floats per output pixel.
    pixels = 65 * 128 * 128
    assert bidirectional_bytes(large, 192, 4, 16) == int(VAE_FLOATS_PER_PIXEL * 4 * pixels + 3 * pixels
                                                         + 16 * large.tokens * 16)  # fmt: skip
    # A wide model in float32 is dominated by the DiT's activations.
    assert bidirectional_bytes(large, 4096, 4, 16) == int(DIT_WIDTHS_PER_TOKEN * large.tokens * 4096 * 4
                                                          + 16 * large.tokens * 16)  # fmt: skip
    # Stream cache: k, v, camera k, camera v per softmax block and guidance row.
    assert streaming_cache_bytes(large, 192, 2, 2) == 2 * 2 * 4 * 192 * 2 * large.tokens


def test_streaming_time_is_chunks_times_the_measured_forward_plus_cache_attention():
    shape = _shape(33, chunk_size=3, rows=2, steps=24)  # 9 latent frames: 2 chunks
    assert shape.num_chunks == 2
    # Without softmax blocks every chunk costs the measured forward per row and step.
    assert streaming_seconds(shape, 0.5, 8_000_000, 192, 0) == pytest.approx(2 * 24 * 2 * 0.5)
    # With them the second chunk also attends to the first (frame 0 + 3 frames = 4 x 256 cached
    # tokens): 4 x 768 x 1024 x 192 multiply-adds per block at the timed forward's throughput.
    throughput = 2 * 8_000_000 * 768 / 0.5
    extra = 4 * 768 * 1024 * 192 * 2 / throughput
    assert streaming_seconds(shape, 0.5, 8_000_000, 192, 2) == pytest.approx(2 * 24 * (2 * 0.5 + extra))
