"""Self-forcing rollout: the student generates a clip chunk by chunk through its own stream cache.

Each chunk starts from noise (the first chunk's frame 0 is the input image's latent, clean and
never changed) and runs the student's few-step rule (`sanawm.sampling`, few-step): at level
sigma_i the student's velocity gives the clean estimate `x - sigma_i v`, which is re-noised with
fresh noise to sigma_{i+1}. The rollout stops at one exit step, the same for every chunk, and
that step's clean estimate is the chunk's output; only the exit steps carry gradients. The
output, detached, is then written into the cache by a sigma = 0 pass, so later chunks read what
the student itself made (not ground truth, not a teacher's output): the train-test gap of
teacher forcing is closed.

This is the generator of self-forcing DMD (`sanawm.train.distill_dmd`); with `grad=False` it
makes the critic's samples.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sanawm.chunks import chunk_spans, chunk_starts_for
from sanawm.sampling.schedule import FlowMatchingSchedule
from sanawm.train.feed import Generators, randn_rows
from sanawm.train.teacher import Condition, commit, new_cache


def rollout(
    student: nn.Module,
    cond: Condition,
    sigmas: Tensor,
    exit_index: int,
    chunk_size: int,
    generator: Generators,
    grad: bool = True,
    window: int | None = None,
    sink: int | None = None,
    grad_from: int = 0,
) -> Tensor:
    """Clean latents (B, C, T, h, w) of the student's clip (float32).

    sigmas: the student's levels, float32, ending at 0 (`FlowMatchingSchedule.sigmas_from_timesteps`).
    exit_index: the step (0 .. len(sigmas) - 2) whose clean estimate every chunk returns.
    generator: draws the noise (per chunk: the start noise, then one draw per re-noising); a list
    of one generator per clip (`feed.sample_generators`) draws each clip's noise from its own, so
    that a clip's rollout does not depend on the rest of the batch (`feed.randn_rows`).
    grad: whether the exit steps record gradients; grad_from: only chunks that reach past this
    latent frame do (earlier ones only fill the cache: long clips in bounded memory).
    window / sink: see `teacher.new_cache`.
    """
    assert 0 <= exit_index < len(sigmas) - 1, f"exit step {exit_index} outside the {len(sigmas) - 1} steps"
    B, C, _, h, w = cond.first.shape
    T = cond.num_frames
    device = cond.first.device
    cache = new_cache(student, window, sink)
    levels = sigmas.to(device)
    outputs = []
    for start, stop in chunk_spans(chunk_starts_for(T, chunk_size), T):
        n = stop - start
        raymap, plucker = cond.camera(start, stop)
        pinned = torch.zeros(n, dtype=torch.bool, device=device)
        pinned[0] = start == 0
        keep = pinned.view(1, 1, n, 1, 1)
        x = randn_rows((B, C, n, h, w), generator).to(device)
        if start == 0:
            x = torch.cat([cond.first, x[:, :, 1:]], dim=2)
        for i in range(exit_index + 1):
            sigma = torch.where(pinned, torch.zeros_like(levels[i]), levels[i])  # (n,)
            timestep = FlowMatchingSchedule.timestep(sigma).expand(B, n)
            with torch.set_grad_enabled(grad and i == exit_index and stop > grad_from):
                velocity = student(x, timestep, cond.text, cond.text_mask, raymap, plucker, cache=cache)
                clean = FlowMatchingSchedule.x0_from_velocity(x, velocity, sigma.view(1, 1, n, 1, 1))
                clean = torch.where(keep, x, clean)
            if i < exit_index:
                noise = randn_rows(tuple(clean.shape), generator).to(device)
                x = torch.where(keep, x, FlowMatchingSchedule.add_noise(clean.detach(), noise, levels[i + 1]))
        outputs.append(clean)
        if stop < T:  # the last chunk is never read again
            commit(student, cache, clean.detach(), cond.text, cond.text_mask, raymap, plucker)
    return torch.cat(outputs, dim=2)


__all__ = ["rollout"]
