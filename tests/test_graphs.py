"""CUDA graphs of the streaming chunk step (`sanawm.model.graphs`), on the CPU: the static-buffer
bookkeeping (run without capture) equals the plain cache-reading forward chunk after chunk,
and the sampler option falls back to the eager path where graphs do not apply."""

import pytest
import torch
from _tiny_models import tiny_transformer

from sanawm.model.graphs import ChunkGraphs, tree_copy_, tree_map, tree_signature
from sanawm.sampling.sampler import ChunkSampler, Conditioning, SamplerSettings, StreamWindow
from sanawm.text import TextEmbedding

C, H, W = 4, 2, 3


@pytest.fixture(scope="module")
def model():
    # float64: the static-buffer path copies inputs into contiguous buffers, which may take
    # other kernels than the strided originals; in float64 any such difference is ~1e-16.
    return tiny_transformer(C, 24, 16, 4, softmax_blocks=(1,)).double()


def _chunk_inputs(model, frames, g, batch=2):
    text = torch.randn(batch, 5, 16, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0]] * batch)
    raymap = torch.randn(1, frames, 20, generator=g, dtype=torch.float64)
    raymap[..., 16:18] = raymap[..., 16:18].abs() + 0.5  # positive focal lengths
    latents = torch.randn(1, C, frames, H, W, generator=g, dtype=torch.float64)
    # as the sampler passes them: one clip expanded over the guidance batch
    return dict(
        latents=latents.expand(batch, -1, -1, -1, -1),
        timestep=(1000 * torch.rand(1, frames, generator=g)).expand(batch, -1),
        text=text,
        text_mask=mask,
        raymap=raymap.expand(batch, -1, -1),
        chunk_plucker=torch.randn(1, 24, frames, H, W, generator=g, dtype=torch.float64).expand(batch, -1, -1, -1, -1),
    )


def test_static_buffer_path_equals_the_forward_chunk_after_chunk(model):
    g = torch.Generator().manual_seed(0)
    window_cache = model.new_stream_cache(window=1, sink=2)
    graphs = ChunkGraphs(model, capture=False)
    spans = [(0, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7)]  # first chunk 2 frames, then 1
    for start, stop in spans:
        inputs = _chunk_inputs(model, stop - start, g)
        for step in range(3):  # several denoising calls per chunk, as the sampler makes
            inputs["timestep"] = inputs["timestep"] * 0.5 if step else inputs["timestep"]
            want = model(**inputs, cache=window_cache)
            got = graphs(window_cache, **inputs)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        model.commit_to_cache(window_cache, **inputs)
    # shapes: chunk 0, chunk 1 (sink only in the cache), then the steady window (4 chunks)
    assert graphs.replays == 2 + 2 + 4 * 3 - 1, graphs.replays  # each new shape's 1st call is eager
    assert len(graphs._entries) == 1  # only the newest shape is kept


def test_static_path_sees_new_cache_state_after_each_commit(model):
    """A replay must read the state committed just before it, not the one captured."""
    g = torch.Generator().manual_seed(1)
    cache = model.new_stream_cache(window=1, sink=1)
    graphs = ChunkGraphs(model, capture=False)
    outs = []
    for start, stop in [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]:
        inputs = _chunk_inputs(model, 1, torch.Generator().manual_seed(7))  # the same inputs each chunk
        graphs(cache, **inputs)  # eager (new shape) or replay
        outs.append(graphs(cache, **inputs))
        model.commit_to_cache(cache, **_chunk_inputs(model, 1, g))
    # the steady-window chunks 2..4 get the same inputs but different caches and frame offsets
    assert not torch.allclose(outs[3], outs[2]) and not torch.allclose(outs[4], outs[3])


def _cond(frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    raymap = torch.randn(1, frames, 20, generator=g, dtype=torch.float64)
    raymap[..., 16:18] = raymap[..., 16:18].abs() + 0.5
    return Conditioning(
        first_latent=torch.randn(1, C, 1, H, W, generator=g, dtype=torch.float64),
        text=TextEmbedding(torch.randn(1, 4, 16, generator=g, dtype=torch.float64), torch.tensor([[1, 1, 1, 0]])),
        raymap=raymap,
        chunk_plucker=torch.randn(1, 24, frames, H, W, generator=g, dtype=torch.float64),
        negative_text=TextEmbedding(torch.randn(1, 4, 16, generator=g, dtype=torch.float64), torch.tensor([[1, 1, 0, 0]])),
    )


def _stream(model, cond, settings, window, graphs_mode):
    """Chunk latents of a stream of 1-frame chunks; graphs_mode None: eager, "cpu": the sampler's
    cuda_graphs option as it is on the CPU, "static": the static-buffer path without capture."""
    sampler = ChunkSampler(model, cond.first_latent, cond.text, cond.negative_text, settings, window,
                           cuda_graphs=graphs_mode is not None)  # fmt: skip
    branches = [b for b in (sampler.guided.main, sampler.guided.no_camera) if b is not None]
    if graphs_mode == "static":
        for b in branches:
            b.graphs = ChunkGraphs(model, capture=False)
    out = []
    T = cond.num_latent_frames
    for start, stop in [(0, 2)] + [(t, t + 1) for t in range(2, T)]:
        camera = (cond.raymap[:, start:stop], cond.chunk_plucker[:, :, start:stop])
        latents = sampler.sample(start, stop, camera)
        sampler.commit(latents, camera)
        out.append(latents)
    return torch.cat(out, dim=2), branches


def test_sampler_option_falls_back_on_cpu_and_static_path_samples_the_same(model):
    cond = _cond(6)
    settings = SamplerSettings(steps=3, flow_shift=3.0, cfg=4.0, camera_cfg=1.5, seed=3)
    window = StreamWindow(chunks=1, sink=2)
    eager, _ = _stream(model, cond, settings, window, None)
    fallback, branches = _stream(model, cond, settings, window, "cpu")
    assert all(b.graphs is not None and b.graphs.replays == 0 for b in branches)  # CPU: never captures
    assert torch.equal(fallback, eager)
    static, branches = _stream(model, cond, settings, window, "static")
    assert len(branches) == 2 and all(b.graphs.replays > 0 for b in branches)
    torch.testing.assert_close(static, eager, rtol=1e-10, atol=1e-10)


def test_unbounded_window_and_sequence_parallel_stay_eager(model):
    graphs = ChunkGraphs(model, capture=False)
    assert not graphs.supported(model.new_stream_cache(), torch.device("cpu"))
    assert graphs.supported(model.new_stream_cache(window=1), torch.device("cpu"))
    assert not ChunkGraphs(model).supported(model.new_stream_cache(window=1), torch.device("cpu"))


def test_tree_helpers_copy_and_key_by_shape():
    from sanawm.model.attention import SoftmaxPast
    from sanawm.model.block import BlockPast

    a = [None, BlockPast(SoftmaxPast(torch.ones(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), None, None), torch.ones(2))]
    b = tree_map(lambda t: t * 2, a)
    assert tree_signature(a) == tree_signature(b)
    c = tree_map(torch.zeros_like, a)
    tree_copy_(c, b)
    assert torch.equal(c[1].attn.k, 2 * torch.ones(1, 2, 3, 4)) and c[1].attn.cam_k is None
    longer = tree_map(lambda t: torch.cat([t, t], dim=-1), a)
    assert tree_signature(longer) != tree_signature(a)


def test_a_failed_capture_warns_and_falls_back_to_the_forward(model, monkeypatch):
    g = torch.Generator().manual_seed(2)
    cache = model.new_stream_cache(window=1, sink=1)
    graphs = ChunkGraphs(model, capture=True)
    monkeypatch.setattr(graphs, "_capturing", lambda device: True)  # as on CUDA

    def fail(entry):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(graphs, "_capture", fail)
    monkeypatch.setattr(graphs, "supported", lambda cache, device: graphs.failed is None)
    inputs = _chunk_inputs(model, 1, g)
    graphs(cache, **inputs)  # first call of the shape: eager
    with pytest.warns(UserWarning, match="runs eagerly: RuntimeError: operation not permitted"):
        got = graphs(cache, **inputs)
    torch.testing.assert_close(got, model(**inputs, cache=cache), rtol=0, atol=0)
    assert graphs.failed.endswith("capturing") and not graphs._entries
    assert torch.equal(graphs(cache, **inputs), got)  # and stays eager, without warning again
