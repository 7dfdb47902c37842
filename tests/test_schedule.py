"""The flow-matching schedule object (shift, levels, noising, velocity target, Euler step)
against independent float64 math and diffusers."""

import numpy as np
import pytest
import torch

from sanawm.sampling.schedule import FlowMatchingSchedule


def flow_sigmas(steps, shift):
    return FlowMatchingSchedule(shift).sampling_sigmas(steps)


next_sigma = FlowMatchingSchedule.next_sigma
euler_step = FlowMatchingSchedule.euler_step


def _reference_sigmas(steps, shift):
    """The schedule written out in float64: shifted levels evenly spaced in timestep space."""

    def shift_fn(s):
        return shift * s / (1 + (shift - 1) * s)

    first, last = shift_fn(1.0), shift_fn(1.0 / 1000)
    t = [first + (last - first) * i / (steps - 1) for i in range(steps)] if steps > 1 else [first]
    return np.array([shift_fn(x) for x in t] + [0.0])


@pytest.mark.parametrize("steps,shift", [(1, 8.0), (4, 1.0), (20, 3.0), (60, 8.0)])
def test_sigmas_match_float64_formula(steps, shift):
    sigmas = flow_sigmas(steps, shift)
    assert sigmas.dtype == torch.float32 and sigmas.shape == (steps + 1,)
    np.testing.assert_allclose(sigmas.numpy(), _reference_sigmas(steps, shift), rtol=1e-6, atol=1e-7)
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0
    assert bool((sigmas[1:] < sigmas[:-1]).all())


@pytest.mark.parametrize("steps", [4, 60])
def test_sigmas_equal_diffusers_scheduler_exactly(steps):
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=8.0)
    scheduler.set_timesteps(steps)
    torch.testing.assert_close(flow_sigmas(steps, 8.0), scheduler.sigmas, rtol=0, atol=0)


def test_next_sigma_steps_tokens_along_the_schedule():
    sigmas = flow_sigmas(5, 2.0)
    current = torch.stack([sigmas[0], sigmas[2], torch.tensor(0.0), (sigmas[1] + sigmas[2]) / 2, sigmas[4]])
    expected = torch.stack([sigmas[1], sigmas[3], torch.tensor(0.0), sigmas[2], torch.tensor(0.0)])
    torch.testing.assert_close(next_sigma(sigmas, current), expected, rtol=0, atol=0)


def test_euler_step_is_the_flow_ode_step():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(2, 3, 4, 2, 2, generator=g, dtype=torch.float64)
    noise = torch.randn(2, 3, 4, 2, 2, generator=g, dtype=torch.float64)
    sigma, sigma_next = torch.tensor(0.8, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    x = (1 - sigma) * data + sigma * noise
    # With the exact velocity (noise - data) one step lands exactly on the path.
    stepped = euler_step(x, noise - data, sigma, sigma_next)
    torch.testing.assert_close(stepped, (1 - sigma_next) * data + sigma_next * noise)


def test_per_token_step_equals_diffusers_reference_update():
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=8.0)
    scheduler.set_timesteps(6)
    sigmas = flow_sigmas(6, 8.0)
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 4, 3, 2, 2, generator=g)
    velocity = torch.randn(1, 4, 3, 2, 2, generator=g)
    for i in [0, 3, 5]:
        t = scheduler.timesteps[i]
        # Frame 0 is the clean anchor (timestep 0), the rest share the step's timestep.
        frame_t = torch.tensor([0.0, float(t), float(t)])
        sigma = (frame_t / 1000).view(1, 1, 3, 1, 1)
        ours = euler_step(latents, velocity, sigma, next_sigma(sigmas, sigma))
        scheduler._step_index = i
        token_t = frame_t.view(1, 3, 1, 1).expand(1, 3, 2, 2).reshape(1, -1)
        ref = scheduler.step(
            -velocity.reshape(1, 4, -1).transpose(1, 2),
            t,
            latents.reshape(1, 4, -1).transpose(1, 2),
            per_token_timesteps=token_t,
            return_dict=False,
        )[0]
        ref = ref.transpose(1, 2).reshape(latents.shape)
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
        torch.testing.assert_close(ours[:, :, 0], latents[:, :, 0], rtol=0, atol=0)


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_bad_step_counts_are_asserted(steps):
    # The user's step count is validated by WorldModel.prepare (tests/test_pipeline.py); here
    # a bad one is a bug.
    with pytest.raises(AssertionError, match="steps"):
        flow_sigmas(steps, 8.0)


@pytest.mark.parametrize("shift", [1.0, 3.0, 8.0])
def test_shift_matches_float64_formula(shift):
    u = torch.linspace(0, 1, 11, dtype=torch.float64)
    want = torch.tensor([shift * v / (1 + (shift - 1) * v) for v in u.tolist()], dtype=torch.float64)
    torch.testing.assert_close(FlowMatchingSchedule(shift).shift_sigma(u), want, rtol=1e-15, atol=0)
    u32 = u.float()  # the float32 levels training draws: the same formula, rounded
    torch.testing.assert_close(FlowMatchingSchedule(shift).shift_sigma(u32).double(), want, rtol=0, atol=1e-6)


def test_noising_velocity_and_timestep_match_float64_formulas():
    g = torch.Generator().manual_seed(3)
    data = torch.randn(2, 3, 4, 2, 2, generator=g, dtype=torch.float64)
    noise = torch.randn(2, 3, 4, 2, 2, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.0, 0.2, 0.7, 1.0], dtype=torch.float64).view(1, 1, 4, 1, 1)
    fm = FlowMatchingSchedule(8.0)
    noisy = fm.add_noise(data, noise, sigma)
    assert noisy.dtype == torch.float64
    for t, s in enumerate([0.0, 0.2, 0.7, 1.0]):
        torch.testing.assert_close(noisy[:, :, t], (1 - s) * data[:, :, t] + s * noise[:, :, t], rtol=0, atol=1e-15)
    assert torch.equal(noisy[:, :, 0], data[:, :, 0])  # sigma 0: exactly the data
    torch.testing.assert_close(fm.velocity_target(data, noise), noise - data, rtol=0, atol=0)
    torch.testing.assert_close(fm.timestep(sigma), sigma * 1000, rtol=0, atol=0)
    # float32 inputs are computed in float32, close to the float64 path
    noisy32 = fm.add_noise(data.float(), noise.float(), sigma.float())
    assert noisy32.dtype == torch.float32 and (noisy32.double() - noisy).abs().max() < 1e-5


def test_bad_shift_is_asserted():
    with pytest.raises(AssertionError, match="shift"):
        FlowMatchingSchedule(0.0)
