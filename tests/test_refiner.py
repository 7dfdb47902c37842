"""Stage-2 refiner: our windowed LTX-2 refinement against diffusers' SanaWMLTX2Refiner."""

import pytest
import torch
from _tiny_refiner import TINY_LTX2, tiny_ltx2_transformer

from sanawm.refiner import RefineSettings, StreamingRefiner, refine_latents


@pytest.fixture(scope="module")
def models():
    from diffusers.models.transformers.transformer_sana_wm_refiner import SanaWMLTX2RefinerTransformer3DModel

    ours = tiny_ltx2_transformer()
    theirs = SanaWMLTX2RefinerTransformer3DModel(**TINY_LTX2).eval()
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _inputs(frames=18, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, frames, 3, 4, generator=g)
    embeds = torch.randn(batch, 6, 16, generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]] * batch)
    return latents, embeds, mask


def _diffusers(transformer, latents, embeds, mask, seed, **kwargs):
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.sana_wm.refiner import SanaWMLTX2Refiner

    pipe = SanaWMLTX2Refiner(
        transformer=transformer,
        connectors=None,
        tokenizer=None,
        text_encoder=None,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
    )
    pipe.set_progress_bar_config(disable=True)
    # "Given the same connector outputs": the prompt encoder is bypassed.
    pipe._encode_prompt = lambda prompt, device, dtype: (embeds, mask)
    generator = torch.Generator().manual_seed(seed)
    return pipe(latents, "unused", fps=16.0, generator=generator, output_type="latent", **kwargs)


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize(
    "frames, batch, window",
    [
        (18, 1, {}),  # 1 sink + 5 blocks + a 2-frame remainder; the window never fills
        (18, 1, {"kv_max_frames": 5}),  # the history slides (trimmed to 4 frames)
        (12, 2, {"kv_max_frames": 4, "block_size": 2, "sink_size": 2}),  # other sizes, batch 2
    ],
)
def test_refine_latents_equals_diffusers_refiner(models, frames, batch, window):
    ours, theirs = models
    latents, embeds, mask = _inputs(frames, batch)
    expected = _diffusers(theirs, latents, embeds, mask, seed=7, **window)
    got = refine_latents(ours, latents, embeds, mask, fps=16.0, generator=torch.Generator().manual_seed(7), **window)
    assert got.shape == latents.shape
    assert _rel(got, expected) <= 1e-5
    # The refiner really changed the clip, except the sink.
    sink = window.get("sink_size", 1)
    torch.testing.assert_close(got[:, :, :sink], latents[:, :, :sink], rtol=0, atol=0)
    assert _rel(got[:, :, sink:], latents[:, :, sink:]) > 0.1


def test_a_different_seed_or_window_gives_a_different_result(models):
    ours, theirs = models
    latents, embeds, mask = _inputs()
    expected = _diffusers(theirs, latents, embeds, mask, seed=7, kv_max_frames=5)

    def ours_with(seed, **window):
        g = torch.Generator().manual_seed(seed)
        return refine_latents(ours, latents, embeds, mask, fps=16.0, generator=g, **window)

    # Measured: seed 1.1, window 2.3e-3, start sigma 3.0e-2 relative L2 (parity holds to 1e-7).
    assert _rel(ours_with(8, kv_max_frames=5), expected) > 1e-3
    assert _rel(ours_with(7, kv_max_frames=6), expected) > 1e-3
    assert _rel(ours_with(7, kv_max_frames=5, sigmas=(0.9, 0.725, 0.421875, 0.0)), expected) > 1e-3
    # Only frames inside the trimmed window differ: the first blocks see the same window.
    changed = ours_with(7, kv_max_frames=6)
    torch.testing.assert_close(changed[:, :, :7], ours_with(7, kv_max_frames=5)[:, :, :7], rtol=1e-6, atol=1e-6)


def test_streaming_in_uneven_pieces_equals_the_whole_clip(models):
    ours, _ = models
    latents, embeds, mask = _inputs(frames=17)
    whole = refine_latents(ours, latents, embeds, mask, fps=16.0, generator=torch.Generator().manual_seed(1))
    refiner = StreamingRefiner(ours, embeds, mask, fps=16.0, generator=torch.Generator().manual_seed(1))
    out, ready = [], []
    for start, stop in [(0, 4), (4, 5), (5, 11), (11, 17)]:
        piece = refiner.push(latents[:, :, start:stop])
        ready.append(0 if piece is None else piece.shape[2])
        out.append(piece)
    out.append(refiner.finish())
    # Blocks are [1, 4), [4, 7), [7, 10), [10, 13), [13, 16), then the short [16, 17).
    assert ready == [4, 0, 6, 6] and out[-1].shape[2] == 1
    torch.testing.assert_close(torch.cat([p for p in out if p is not None], dim=2), whole, rtol=1e-6, atol=1e-6)
    # The window never holds more than sink + history + one block.
    window = refiner.window
    assert window.layers[0].keys.shape[1] == (1 + 10 + 3) * 12 and window.history_tokens == 10 * 12


def test_bad_settings_and_clips_are_refused(models):
    ours, _ = models
    latents, embeds, mask = _inputs(frames=1)
    with pytest.raises(ValueError, match="more than sink_size"):
        refine_latents(ours, latents, embeds, mask, fps=16.0, generator=torch.Generator())
    with pytest.raises(ValueError, match="kv_max_frames"):
        RefineSettings(kv_max_frames=1)
    with pytest.raises(ValueError, match="sigmas"):
        RefineSettings(sigmas=(0.9, 0.95, 0.0))
    with pytest.raises(ValueError, match="sigmas"):
        RefineSettings(sigmas=(0.9, 0.5))
