"""The DiT objective: noising / target against float64 hand computations, noise plans, loss, text."""

import math

import numpy as np
import pytest
import torch

from sanawm.chunks import chunk_starts_for
from sanawm.sampling.schedule import FlowMatchingSchedule
from sanawm.text import TextEmbedding
from sanawm.train.config import FlowMatchingConfig
from sanawm.train.objective import (
    channel_loss_weights,
    flow_matching_loss,
    noise_latents,
    sample_noise_plan,
    text_inputs,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_noising_and_target_match_a_float64_hand_computation():
    g = _gen(1)
    latents = torch.randn(2, 3, 4, 2, 5, generator=g)
    noise = torch.randn(2, 3, 4, 2, 5, generator=g)
    sigmas = torch.tensor([[0.0, 0.25, 0.5, 0.9], [0.0, 0.999, 0.001, 0.3]])
    noisy, target = noise_latents(latents, noise, sigmas)
    for b in range(2):
        for t in range(4):
            s = float(sigmas[b, t])
            want = (1 - s) * latents[b, :, t].double() + s * noise[b, :, t].double()
            torch.testing.assert_close(noisy[b, :, t].double(), want, rtol=0, atol=1e-6)
    torch.testing.assert_close(target.double(), noise.double() - latents.double(), rtol=0, atol=1e-6)


def test_clean_frames_are_bit_identical_to_the_data():
    latents = torch.randn(2, 4, 3, 2, 2) * 1e3
    noise = torch.full_like(latents, float("nan"))  # any noise leaking in would show
    noisy, _ = noise_latents(latents, noise, torch.zeros(2, 3))
    assert torch.equal(noisy, latents)


def test_target_is_the_velocity_the_sampler_integrates():
    # One exact Euler step of the sampler with the training target moves a noised latent from
    # level s to level s' along the same straight path: the sign conventions agree.
    g = _gen(2)
    data = torch.randn(1, 2, 3, 2, 2, generator=g, dtype=torch.float64)
    noise = torch.randn(1, 2, 3, 2, 2, generator=g, dtype=torch.float64)
    s, s_next = 0.8, 0.35
    x, v = noise_latents(data, noise, torch.full((1, 3), s))
    x_next, _ = noise_latents(data, noise, torch.full((1, 3), s_next))
    s64, s_next64 = torch.tensor(s, dtype=torch.float64), torch.tensor(s_next, dtype=torch.float64)
    stepped = FlowMatchingSchedule(8.0).euler_step(x.double(), v.double(), s64, s_next64)
    torch.testing.assert_close(stepped, x_next.double(), rtol=0, atol=1e-6)


def test_training_levels_are_the_schedules_shift_of_a_logit_normal():
    # Training draws sigma = shift(sigmoid(mean + std z)) through the sampler's schedule object.
    cfg = FlowMatchingConfig(frame_noise_prob=1.0, logit_mean=0.3, logit_std=0.7, sigma_shift=3.0)
    plan = sample_noise_plan(2, 5, cfg, _gen(9))
    g = _gen(9)
    z = torch.randn((2, 5), generator=g, dtype=torch.float32).double()
    u = torch.sigmoid(0.3 + 0.7 * z)
    want = 3.0 * u / (1 + 2.0 * u)
    torch.testing.assert_close(plan.sigmas[:, 1:].double(), want[:, 1:], rtol=0, atol=1e-6)


def test_first_frame_is_never_noised_in_any_plan():
    cfg = FlowMatchingConfig(frame_noise_prob=0.5, chunk_size=2)
    for seed in range(20):
        for causal in (False, True):
            plan = sample_noise_plan(4, 7, cfg, _gen(seed), causal=causal)
            assert torch.all(plan.sigmas[:, 0] == 0)
            assert torch.all(plan.loss_mask[:, 0] == 0)
            assert torch.all(plan.timesteps[:, 0] == 0)
            assert torch.all((plan.sigmas[:, 1:] >= 0) & (plan.sigmas[:, 1:] < 1))


def test_shared_and_independent_levels():
    shared = sample_noise_plan(8, 5, FlowMatchingConfig(frame_noise_prob=0.0), _gen(3)).sigmas
    assert torch.all(shared[:, 1:] == shared[:, 1:2]) and torch.all(shared[:, 1:] > 0)
    independent = sample_noise_plan(8, 5, FlowMatchingConfig(frame_noise_prob=1.0), _gen(3)).sigmas
    assert all(len(set(row[1:].tolist())) == 4 for row in independent)


def test_level_distribution_is_a_shifted_logit_normal():
    # median of shift(sigmoid(m + s z)) is shift(sigmoid(m)); check it on many draws.
    for mean, k in ((0.0, 3.0), (0.5, 1.0)):
        cfg = FlowMatchingConfig(frame_noise_prob=1.0, logit_mean=mean, logit_std=1.0, sigma_shift=k)
        sig = sample_noise_plan(2000, 11, cfg, _gen(4)).sigmas[:, 1:]
        u = 1 / (1 + math.exp(-mean))
        assert float(sig.median()) == pytest.approx(k * u / (1 + (k - 1) * u), abs=0.01)


def test_causal_plan_has_a_clean_prefix_and_one_level_per_chunk():
    cfg = FlowMatchingConfig(chunk_size=2)
    T = 9
    starts = chunk_starts_for(T, 2)  # [0, 3, 5, 7]
    plan = sample_noise_plan(200, T, cfg, _gen(5), causal=True)
    assert plan.chunk_size == 2
    seen_prefix = set()
    for row in plan.sigmas:
        clean = int((row == 0).sum())
        assert torch.all(row[:clean] == 0) and torch.all(row[clean:] > 0)  # a prefix, then noise
        assert clean in [1] + starts[1:]  # the image frame alone, or whole chunks
        seen_prefix.add(clean)
        bounds = starts + [T]
        for a, b in zip(bounds, bounds[1:]):
            chunk = row[max(a, clean) : b]
            if len(chunk):
                assert torch.all(chunk == chunk[0])
    assert seen_prefix == {1, 3, 5, 7}


def test_loss_is_the_mean_over_noised_frames_only():
    g = _gen(6)
    pred = torch.randn(2, 3, 4, 2, 2, generator=g)
    target = torch.randn(2, 3, 4, 2, 2, generator=g)
    mask = torch.tensor([[0.0, 1, 1, 0], [0, 1, 0, 1]])
    total, count = 0.0, 0
    for b in range(2):
        for t in range(4):
            if mask[b, t]:
                total += sum(float(p - q) ** 2 for p, q in zip(pred[b, :, t].flatten(), target[b, :, t].flatten()))
                count += 3 * 2 * 2
    per_frame_mean = total / count  # every frame has the same element count
    assert float(flow_matching_loss(pred, target, mask)) == pytest.approx(per_frame_mean, rel=1e-5)
    changed = pred.clone()
    changed[:, :, 0] += 100.0  # clean frames do not count
    assert float(flow_matching_loss(changed, target, mask)) == pytest.approx(per_frame_mean, rel=1e-5)


def test_channel_weighted_loss_against_a_float64_sum():
    g = _gen(7)
    pred = torch.randn(2, 3, 4, 2, 2, generator=g)
    target = torch.randn(2, 3, 4, 2, 2, generator=g)
    mask = torch.tensor([[0.0, 1, 1, 0], [0, 1, 0, 1]])
    weights = torch.tensor([0.2, 1.3, 1.5])
    p, t, w = pred.double().numpy(), target.double().numpy(), weights.double().numpy()
    clip_means = []
    for b in range(2):  # per sample: the mean over a clip's noised frames, then over the clips
        frames = [sum(w[c] * (p[b, c, f] - t[b, c, f]) ** 2 for c in range(3)).mean() / 3 for f in range(4) if mask[b, f]]
        clip_means.append(sum(frames) / len(frames))
    expected = sum(clip_means) / 2
    got = float(flow_matching_loss(pred, target, mask, per_sample=True, channel_weights=weights))
    assert got == pytest.approx(expected, rel=1e-5)
    ones = float(flow_matching_loss(pred, target, mask, per_sample=True, channel_weights=torch.ones(3)))
    assert ones == pytest.approx(float(flow_matching_loss(pred, target, mask, per_sample=True)), rel=1e-6)


def test_channel_weights_at_power_one_make_the_loss_pixel_mse_of_a_linear_code():
    """An orthonormal linear code: pixels = basis @ (std * z) for normalised latents z. With
    power 1 the weighted latent loss is the pixel MSE up to one constant, for any error."""
    rng = np.random.default_rng(0)
    std = torch.tensor([3.0, 1.2, 0.5, 0.1, 0.05], dtype=torch.float64)
    basis = np.linalg.qr(rng.normal(size=(12, 5)))[0]  # 12 pixels, 5 orthonormal columns
    weights = channel_loss_weights(std, 1.0).double()
    np.testing.assert_allclose(weights.numpy(), std.numpy() ** 2 / np.mean(std.numpy() ** 2), rtol=1e-6)
    np.testing.assert_allclose(channel_loss_weights(std, 0.5).double().numpy(), std.numpy() / std.numpy().mean(), rtol=1e-6)
    ratios = []
    for _ in range(4):
        error = rng.normal(size=5)  # in normalised latent units
        pixel_mse = np.mean((basis @ (std.numpy() * error)) ** 2)
        latent = np.mean(weights.numpy() * error**2)
        ratios.append(pixel_mse / latent)
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-6)  # one constant: Σ std² / 12 pixels
    assert ratios[0] == pytest.approx(float((std**2).sum()) / 12, rel=1e-6)


def test_text_inputs_pad_keep_and_drop():
    table = torch.randn(4, 3)
    null = TextEmbedding(table[None], torch.ones(1, 4, dtype=torch.long))
    states = torch.randn(2, 2, 3)
    mask = torch.tensor([[1, 0], [1, 1]])
    s, m = text_inputs(null, 2)
    assert torch.equal(s, table.expand(2, 4, 3)) and torch.equal(m, torch.ones(2, 4, dtype=torch.long))
    s, m = text_inputs(null, 2, states, mask, torch.tensor([True, False]))
    torch.testing.assert_close(s[0, :2], states[0])
    assert torch.all(s[0, 2:] == 0) and m[0].tolist() == [1, 0, 0, 0]
    assert torch.equal(s[1], table) and m[1].tolist() == [1, 1, 1, 1]  # no caption: null text
    s, m = text_inputs(null, 2, states, mask, None, dropout=1.0, generator=_gen())
    assert torch.equal(s, table.expand(2, 4, 3))
    with pytest.raises(AssertionError, match="text states"):
        text_inputs(null, 2, torch.randn(2, 5, 3), torch.ones(2, 5))
