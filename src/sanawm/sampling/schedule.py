"""The flow-matching schedule: one object for training, sampling and distillation.

Convention: a latent at noise level sigma in [0, 1] is `x = (1 - sigma) * data + sigma * noise`.
The model predicts the velocity `v = noise - data` (d x / d sigma), fed the timestep
`1000 * sigma` per latent frame. One Euler step from sigma to sigma_next < sigma is
`x + (sigma_next - sigma) * v`.

The timestep shift `shift(s) = k s / (1 + (k - 1) s)` (k = `FlowMatchingSchedule.shift`)
moves effort to high noise: training draws its levels through it, sampling spaces its steps
through it. The sampling schedule is the one SANA-WM samples with (diffusers' flow-matching
Euler scheduler with a constant shift): `steps` values evenly spaced in timestep space from 1
down to the shifted smallest training level, each shifted, then a final 0. Every level is
computed in float32 exactly like the reference so schedules agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

NUM_TRAIN_TIMESTEPS = 1000

# Two noise levels closer than this are "the same level" when looking for a token's next one.
_LEVEL_TOLERANCE = 1e-6

_Levels = TypeVar("_Levels", Tensor, np.ndarray)


def _work(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


@dataclass(frozen=True)
class FlowMatchingSchedule:
    """Noise levels, noising, velocity target and Euler step of rectified flow with shift k."""

    shift: float
    """k of the timestep shift (1: none; SANA-WM samples with 8)."""

    def __post_init__(self) -> None:
        # Checked where the user gives it (model folder, training config); here a bug.
        assert self.shift > 0 and np.isfinite(self.shift), f"flow shift must be a positive number, got {self.shift!r}"

    # ---- levels ----------------------------------------------------------------------------

    def shift_sigma(self, u: _Levels) -> _Levels:
        """`k u / (1 + (k - 1) u)`, elementwise in u's dtype (identity for k = 1)."""
        return self.shift * u / (1 + (self.shift - 1) * u)

    def sampling_sigmas(self, steps: int) -> Tensor:
        """Noise levels of a `steps`-step sampling run: float32 tensor of shape (steps + 1,),
        strictly decreasing from 1.0 to the smallest level, followed by a final 0.0 (clean)."""
        assert not isinstance(steps, bool) and int(steps) == steps >= 1, (
            f"number of sampling steps must be a positive integer, got {steps!r}")  # fmt: skip
        steps = int(steps)
        # The scheduler's training table ends at level shift(1/1000); inference spaces `steps`
        # timesteps from its first (1.0) to its last entry and shifts them once more.
        train_levels = self.shift_sigma(np.array([1.0, 1.0 / NUM_TRAIN_TIMESTEPS], dtype=np.float32))
        sigma_max, sigma_min = (float(np.float32(s)) for s in train_levels)
        timesteps = np.linspace(sigma_max * NUM_TRAIN_TIMESTEPS, sigma_min * NUM_TRAIN_TIMESTEPS, steps)
        sigmas = self.shift_sigma(timesteps / NUM_TRAIN_TIMESTEPS).astype(np.float32)
        return torch.cat([torch.from_numpy(sigmas), torch.zeros(1)])

    def few_step_sigmas(self, steps: int) -> Tensor:
        """Levels of a few-step student run: `shift(1 - i / steps)` for i = 0 .. steps (float32,
        ending at 0). With shift 8 and 4 steps: timesteps 1000, 960, 889, 727 (SANA-WM's
        distilled default)."""
        assert not isinstance(steps, bool) and int(steps) == steps >= 1, f"bad step count {steps!r}"
        u = np.linspace(1.0, 0.0, int(steps) + 1)
        return torch.from_numpy(self.shift_sigma(u).astype(np.float32))

    @staticmethod
    def sigmas_from_timesteps(timesteps) -> Tensor:
        """Levels (float32, a final 0 appended) of explicit timesteps on the 0..1000 scale."""
        levels = np.asarray([float(t) for t in timesteps], dtype=np.float64) / NUM_TRAIN_TIMESTEPS
        return torch.cat([torch.from_numpy(levels.astype(np.float32)), torch.zeros(1)])

    @staticmethod
    def x0_from_velocity(latents: Tensor, velocity: Tensor, sigma: Tensor) -> Tensor:
        """The clean estimate `x - sigma * v` of latents at level sigma (float32 at least)."""
        work = _work(latents)
        return latents.to(work) - sigma.to(work) * velocity.to(work)

    @staticmethod
    def next_sigma(sigmas: Tensor, current: Tensor) -> Tensor:
        """For each token noise level in `current`, the next lower level of the schedule `sigmas`.

        A token at level `sigmas[i]` moves to `sigmas[i + 1]`; a clean token (0) stays at 0.
        Levels in between move to the largest schedule level strictly below them, so frames that
        sit at different noise levels (a clean anchor, chunks at different stages) step
        consistently.
        """
        levels = sigmas.to(current.device, current.dtype).reshape(-1, *([1] * current.dim()))
        below = levels < current.unsqueeze(0) - _LEVEL_TOLERANCE
        return torch.where(below, levels, torch.zeros_like(levels)).amax(dim=0)

    @staticmethod
    def timestep(sigma: Tensor) -> Tensor:
        """The model's timestep (0..1000 scale) of noise level `sigma`."""
        return sigma * NUM_TRAIN_TIMESTEPS

    # ---- the path and its velocity -------------------------------------------------------

    @staticmethod
    def add_noise(data: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
        """`(1 - sigma) * data + sigma * noise` (sigma broadcasts against data), in float32 at
        least; where sigma is 0 the result is bit-identical to `data`."""
        work = _work(data)
        x, n, s = data.to(work), noise.to(work), sigma.to(work)
        return torch.where(s > 0, (1 - s) * x + s * n, x)

    @staticmethod
    def velocity_target(data: Tensor, noise: Tensor) -> Tensor:
        """What the model learns to predict: `noise - data` (d x / d sigma), in float32 at least."""
        work = _work(data)
        return noise.to(work) - data.to(work)

    @staticmethod
    def euler_step(latents: Tensor, velocity: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        """One Euler step of the flow ODE: `latents + (sigma_next - sigma) * velocity`.

        `sigma` and `sigma_next` broadcast against `latents` (per frame: shape (B, 1, T, 1, 1)).
        Computed in float32 at least (the reference upcasts), returned in the latents' dtype.
        """
        dtype = _work(latents)
        step = (sigma_next - sigma).to(dtype)
        return (latents.to(dtype) + step * velocity.to(dtype)).to(latents.dtype)


__all__ = ["FlowMatchingSchedule", "NUM_TRAIN_TIMESTEPS"]
