"""Samplers with the real DiT (tiny random preset): clean anchor frame, seeding, guidance,
streaming == one-shot chunk-causal sampling, flat memory while streaming."""

import weakref

import pytest
import torch
from _tiny_models import tiny_transformer
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from sanawm.chunks import chunk_spans, chunk_starts_for
from sanawm.sampling.sampler import (
    Conditioning,
    SamplerSettings,
    sample_bidirectional,
    sample_streaming,
)
from sanawm.sampling.schedule import FlowMatchingSchedule
from sanawm.text import TextEmbedding

C, H, W = 4, 2, 2


@pytest.fixture(scope="module")
def model():
    return tiny_transformer(C, 24, 16, 4)


def _cond(model, frames, seed=0, negative=False):
    g = torch.Generator().manual_seed(seed)
    raymap = torch.randn(1, frames, 20, generator=g)
    raymap[..., 16:18] = raymap[..., 16:18].abs() + 0.5  # positive focal lengths
    neg = None
    if negative:
        neg = TextEmbedding(torch.randn(1, 4, 16, generator=g), torch.tensor([[1, 1, 0, 0]]))
    return Conditioning(
        first_latent=torch.randn(1, C, 1, H, W, generator=g),
        text=model.null_text(),
        raymap=raymap,
        chunk_plucker=torch.randn(1, 24, frames, H, W, generator=g),
        negative_text=neg,
    )


def test_first_latent_frame_stays_exactly_clean(model):
    cond = _cond(model, 4)
    settings = SamplerSettings(steps=2, flow_shift=3.0, seed=0)
    out = sample_bidirectional(model, cond, settings)
    assert out.shape == (1, C, 4, H, W)
    assert torch.equal(out[:, :, :1], cond.first_latent)
    first_chunk = next(sample_streaming(model, cond, settings, chunk_size=1))
    assert torch.equal(first_chunk[:, :, :1], cond.first_latent)


def test_seeded_sampling_is_reproducible(model):
    cond = _cond(model, 3)
    a = sample_bidirectional(model, cond, SamplerSettings(steps=2, flow_shift=3.0, seed=7))
    b = sample_bidirectional(model, cond, SamplerSettings(steps=2, flow_shift=3.0, seed=7))
    c = sample_bidirectional(model, cond, SamplerSettings(steps=2, flow_shift=3.0, seed=8))
    assert torch.equal(a, b)
    assert (a[:, :, 1:] - c[:, :, 1:]).abs().max() > 1e-3


@torch.no_grad()
def test_one_step_is_the_guided_euler_step(model):
    """One step from pure noise (sigma 1 -> 0): x - v, v combining three separate model calls."""
    cond = _cond(model, 3, negative=True)
    settings = SamplerSettings(steps=1, flow_shift=3.0, cfg=2.5, camera_cfg=1.5, seed=3)
    out = sample_bidirectional(model, cond, settings)

    x = torch.randn(1, C, 3, H, W, generator=torch.Generator().manual_seed(3))
    x[:, :, :1] = cond.first_latent
    t = torch.tensor([[0.0, 1000.0, 1000.0]])
    text, neg = cond.text, cond.negative_text
    v_full = model(x, t, text.states, text.mask, cond.raymap, cond.chunk_plucker)
    v_neg = model(x, t, neg.states, neg.mask, cond.raymap, cond.chunk_plucker)
    v_no_cam = model(x, t, text.states, text.mask)
    v = v_neg + 2.5 * (v_full - v_neg) + 0.5 * (v_full - v_no_cam)
    expected = x - v
    expected[:, :, :1] = cond.first_latent
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def _one_shot_chunk_causal(model, cond, settings, chunk_size):
    """Reference: every step of every chunk runs the plain chunk-causal forward over the whole
    prefix, with no cache: finished chunks clean at timestep 0, or with `context_sigma` as
    (1 - s) x + s n at timestep 1000 s (n drawn after the chunk; the image's frame clean)."""
    T = cond.num_latent_frames
    bounds = chunk_spans(chunk_starts_for(T, chunk_size), T)
    starts = [a for a, _ in bounds]
    sigmas = FlowMatchingSchedule(settings.flow_shift).sampling_sigmas(settings.steps)
    g = torch.Generator().manual_seed(settings.seed)
    done = torch.zeros(1, C, 0, H, W)
    seen, seen_t = torch.zeros(1, C, 0, H, W), torch.zeros(1, 0)  # the prefix as the model sees it
    s_ctx = settings.context_sigma
    text, neg = cond.text, cond.negative_text
    for a, b in bounds:
        x = torch.randn(1, C, b - a, H, W, generator=g)
        if a == 0:
            x[:, :, :1] = cond.first_latent
        prefix_starts = [s for s in starts if s < b]
        for i in range(settings.steps):
            t = torch.full((1, b), float(sigmas[i] * 1000))
            t[:, :a] = seen_t
            t[:, 0] = 0.0
            full_x = torch.cat([seen, x], dim=2)
            ray, plk = cond.raymap[:, :b], cond.chunk_plucker[:, :, :b]

            def run(states, mask, camera):
                kw = dict(raymap=ray, chunk_plucker=plk) if camera else {}
                return model(full_x, t, states, mask, chunk_starts=prefix_starts, **kw)[:, :, a:]

            v_full = run(text.states, text.mask, True)
            v_neg = run(neg.states, neg.mask, True)
            v_no_cam = run(text.states, text.mask, False)
            v = v_neg + settings.cfg * (v_full - v_neg) + (settings.camera_cfg - 1) * (v_full - v_no_cam)
            stepped = x + (sigmas[i + 1] - sigmas[i]) * v
            if a == 0:
                stepped[:, :, :1] = cond.first_latent
            x = stepped
        done = torch.cat([done, x], dim=2)
        if b < T:
            level = torch.full((b - a,), s_ctx)
            level[: 1 if a == 0 else 0] = 0.0
            noised = x
            if s_ctx > 0:
                noised = (1 - level.view(1, 1, -1, 1, 1)) * x + level.view(1, 1, -1, 1, 1) * torch.randn(x.shape, generator=g)
            seen, seen_t = torch.cat([seen, noised], dim=2), torch.cat([seen_t, 1000 * level[None]], dim=1)
    return done


@torch.no_grad()
def test_streaming_equals_one_shot_chunk_causal_sampling(model):
    cond = _cond(model, 6, seed=1, negative=True)
    settings = SamplerSettings(steps=2, flow_shift=3.0, cfg=2.0, camera_cfg=1.5, seed=5)
    chunks = list(sample_streaming(model, cond, settings, chunk_size=2))
    assert [c.shape[2] for c in chunks] == [3, 3]
    reference = _one_shot_chunk_causal(model, cond, settings, chunk_size=2)
    torch.testing.assert_close(torch.cat(chunks, dim=2), reference, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_streaming_with_noised_context_equals_its_one_shot_reference(model):
    """context_sigma: each finished chunk is committed noised (frame 0 clean) at its timestep;
    the stream equals the one-shot chunk-causal forward over such a prefix, and differs from
    the clean-context stream from the second chunk on."""
    cond = _cond(model, 9, seed=2, negative=True)
    noised = SamplerSettings(steps=2, flow_shift=3.0, cfg=2.0, camera_cfg=1.5, seed=5, context_sigma=0.3)
    chunks = torch.cat(list(sample_streaming(model, cond, noised, chunk_size=2)), dim=2)
    reference = _one_shot_chunk_causal(model, cond, noised, chunk_size=2)
    torch.testing.assert_close(chunks, reference, rtol=1e-4, atol=1e-4)
    clean = SamplerSettings(steps=2, flow_shift=3.0, cfg=2.0, camera_cfg=1.5, seed=5)
    clean_chunks = torch.cat(list(sample_streaming(model, cond, clean, chunk_size=2)), dim=2)
    assert torch.equal(chunks[:, :, :3], clean_chunks[:, :, :3])  # the first chunk reads no context
    assert (chunks[:, :, 3:5] - clean_chunks[:, :, 3:5]).abs().max() > 1e-3


def test_streaming_chunk_spans():
    def spans(T, size):
        return chunk_spans(chunk_starts_for(T, size), T)

    assert spans(7, 2) == [(0, 3), (3, 5), (5, 7)]
    assert spans(6, 2) == [(0, 3), (3, 6)]  # a short remainder joins the last chunk
    assert spans(3, 1) == [(0, 2), (2, 3)]
    assert spans(2, 4) == [(0, 2)]


class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of tensor storages created by torch ops that are still referenced,
    and the peak of that count: a deterministic memory measure on CPU. An op's output that
    shares an input's storage counts only if the meter saw that storage created (a view of a
    weight allocates nothing)."""

    def __init__(self):
        super().__init__()
        self.refs: dict[int, list[int]] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t, inputs)
        return out

    def _track(self, t, inputs):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key == 0:
            return
        entry = self.refs.get(key)
        if entry is None:
            if key in inputs:  # a view of memory the meter did not see allocated (a weight)
                return
            entry = self.refs[key] = [storage.nbytes(), 0]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key):
        entry = self.refs[key]
        entry[1] -= 1
        if entry[1] == 0:
            del self.refs[key]
            self.current -= entry[0]


def _stream_memory(model, frames):
    cond = _cond(model, frames)
    settings = SamplerSettings(steps=1, flow_shift=3.0, camera_cfg=2.0, seed=0)
    between_chunks = []
    with LiveTensorBytes() as meter:
        for chunk in sample_streaming(model, cond, settings, chunk_size=1):
            del chunk
            between_chunks.append(meter.current)
    return meter.peak, between_chunks


@torch.no_grad()
def test_streaming_memory_is_flat_in_the_number_of_chunks():
    gdn_only = tiny_transformer(C, 24, 16, 4, softmax_blocks=())
    peak_short, held_short = _stream_memory(gdn_only, 3)
    peak_long, held_long = _stream_memory(gdn_only, 6)
    assert peak_long == peak_short
    # What the stream holds between chunks (caches, generator state) stops growing.
    assert len(set(held_long[1:])) == 1 and held_long[1] == held_short[1]


@torch.no_grad()
def test_memory_meter_sees_softmax_key_value_growth(model):
    # The control: softmax blocks keep every committed frame's keys / values, and the meter shows it.
    _, held = _stream_memory(model, 6)
    assert held[1] < held[2] < held[3]  # (the last chunk is never committed)


def test_bad_inputs_are_asserted(model):
    # The sampler's inputs come from WorldModel (which validates the user's request and the
    # model folder's settings); inconsistent ones are bugs, caught by cheap asserts.
    cond = _cond(model, 3)
    with pytest.raises(AssertionError, match="chunk_size"):
        next(sample_streaming(model, cond, SamplerSettings(steps=1, flow_shift=3.0), chunk_size=0))
    bad = Conditioning(cond.first_latent, cond.text, cond.raymap, cond.chunk_plucker[..., :1])
    with pytest.raises(AssertionError, match="grid"):
        sample_bidirectional(model, bad, SamplerSettings(steps=1, flow_shift=3.0))
    with pytest.raises(AssertionError, match="steps"):
        sample_bidirectional(model, cond, SamplerSettings(steps=0, flow_shift=3.0))
