"""Flow-matching noise schedule and the Euler update, with per-frame noise levels.

Convention: a latent at noise level sigma in [0, 1] is `x = (1 - sigma) * data + sigma * noise`.
The model predicts the velocity `v = noise - data` (d x / d sigma), fed the timestep
`1000 * sigma` per latent frame. One Euler step from sigma to sigma_next < sigma is
`x + (sigma_next - sigma) * v`.

The schedule is the one SANA-WM samples with (diffusers' flow-matching Euler scheduler with a
constant `shift`): `steps` values evenly spaced in timestep space from 1 down to the shifted
smallest training level, each passed through `shift(s) = k s / (1 + (k - 1) s)`, then a final 0.
Every level is computed in float32 exactly like the reference so schedules agree bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from sanawm.errors import UserInputError

NUM_TRAIN_TIMESTEPS = 1000

# Two noise levels closer than this are "the same level" when looking for a token's next one.
_LEVEL_TOLERANCE = 1e-6


def _shift(sigma: np.ndarray, shift: float) -> np.ndarray:
    return shift * sigma / (1 + (shift - 1) * sigma)


def flow_sigmas(steps: int, shift: float) -> torch.Tensor:
    """Noise levels of a `steps`-step sampling run: float32 tensor of shape (steps + 1,).

    Strictly decreasing from 1.0 to the smallest level, followed by a final 0.0 (clean).
    `shift` > 1 spends more steps at high noise (SANA-WM uses 8 for its 60-step sampler).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserInputError(f"number of sampling steps must be a positive integer, got {steps!r}")
    if not shift > 0 or not np.isfinite(shift):
        raise UserInputError(f"flow shift must be a positive number, got {shift!r}")
    # The scheduler's training table ends at level shift(1/1000); inference spaces `steps`
    # timesteps from its first (1.0) to its last entry and shifts them once more.
    train_levels = _shift(np.array([1.0, 1.0 / NUM_TRAIN_TIMESTEPS], dtype=np.float32), shift)
    sigma_max, sigma_min = (float(np.float32(s)) for s in train_levels)
    timesteps = np.linspace(sigma_max * NUM_TRAIN_TIMESTEPS, sigma_min * NUM_TRAIN_TIMESTEPS, steps)
    sigmas = _shift(timesteps / NUM_TRAIN_TIMESTEPS, shift).astype(np.float32)
    return torch.cat([torch.from_numpy(sigmas), torch.zeros(1)])


def next_sigma(sigmas: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """For each token noise level in `current`, the next lower level of the schedule.

    `sigmas` is a schedule from `flow_sigmas`; `current` any shape. A token at level
    `sigmas[i]` moves to `sigmas[i + 1]`; a clean token (0) stays at 0. Levels in between
    move to the largest schedule level strictly below them, so frames that sit at different
    noise levels (a clean anchor, chunks at different stages) step consistently.
    """
    levels = sigmas.to(current.device, current.dtype).reshape(-1, *([1] * current.dim()))
    below = levels < current.unsqueeze(0) - _LEVEL_TOLERANCE
    return torch.where(below, levels, torch.zeros_like(levels)).amax(dim=0)


def euler_step(
    latents: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor
) -> torch.Tensor:
    """One Euler step of the flow ODE: `latents + (sigma_next - sigma) * velocity`.

    `sigma` and `sigma_next` broadcast against `latents` (per frame: shape (B, 1, T, 1, 1)).
    Computed in float32 at least (the reference upcasts), returned in the latents' dtype.
    """
    dtype = torch.promote_types(latents.dtype, torch.float32)
    step = (sigma_next - sigma).to(dtype)
    return (latents.to(dtype) + step * velocity.to(dtype)).to(latents.dtype)
