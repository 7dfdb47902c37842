"""The DiT training objective: flow matching with a noise level per latent frame.

Convention (the sampler's: one `FlowMatchingSchedule`, `sanawm.sampling.schedule`): a latent
frame at noise level sigma is `x = (1 - sigma) * data + sigma * noise`, the model is fed the
timestep `1000 * sigma` of each frame and trained to predict the velocity `noise - data`.
Latent frame 0 is the clean image the video starts from: its sigma is always 0 (so it is
exactly the data) and it is left out of the loss, like every other clean frame.

Noise levels: sigma = shift(u), u ~ logit-normal(mean, std), shift(u) = k u / (1 + (k - 1) u)
with the same k the sampler's schedule uses, so training spends its effort where sampling
does. A clip gets either one level for all its frames (what bidirectional sampling sees) or,
with probability `frame_noise_prob`, an independent level per frame (what lets the model
denoise frames at different stages, as streaming does).

Chunk-causal steps (`causal_prob`) train what streaming generation runs: latent frames are
grouped into chunks (`sanawm.chunks`); a random number of leading chunks is
clean (the streamed past), the rest get one level per chunk. The model is then called with
`chunk_size`, so each chunk attends to earlier chunks and itself only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sanawm.chunks import chunk_starts_for
from sanawm.sampling.schedule import FlowMatchingSchedule
from sanawm.text import TextEmbedding
from sanawm.train.config import FlowMatchingConfig


@dataclass
class NoisePlan:
    """Noise levels of one training step.

    sigmas: (B, T) float32 in [0, 1), column 0 (and any clean prefix) exactly 0.
    chunk_size: latent frames per chunk when the step is chunk-causal, else None.
    """

    sigmas: Tensor
    chunk_size: int | None = None

    @property
    def loss_mask(self) -> Tensor:
        """(B, T) float: 1 for the frames that are noised (and so trained), 0 for clean ones."""
        return (self.sigmas > 0).float()

    @property
    def timesteps(self) -> Tensor:
        """(B, T) model timesteps on the 0..1000 scale."""
        return FlowMatchingSchedule.timestep(self.sigmas)


def _logit_normal(shape: tuple[int, ...], cfg: FlowMatchingConfig, generator: torch.Generator) -> Tensor:
    z = torch.randn(shape, generator=generator, device=generator.device)
    return FlowMatchingSchedule(cfg.sigma_shift).shift_sigma(torch.sigmoid(cfg.logit_mean + cfg.logit_std * z))


def sample_noise_plan(
    batch: int, frames: int, cfg: FlowMatchingConfig, generator: torch.Generator, causal: bool = False
) -> NoisePlan:
    """Draw the noise levels of a step (see module doc); tensors on the generator's device."""
    assert frames >= 2, f"a training clip needs at least 2 latent frames, got {frames}"  # checked by TrainConfig
    device = generator.device
    if causal:
        starts = chunk_starts_for(frames, cfg.chunk_size)
        ends = starts[1:] + [frames]
        per_chunk = _logit_normal((batch, len(starts)), cfg, generator)
        chunk_of = torch.cat([torch.full((e - s,), i, dtype=torch.long) for i, (s, e) in enumerate(zip(starts, ends))])
        sigmas = per_chunk[:, chunk_of.to(device)]
        # Leading clean chunks: c = 0 keeps only the image frame clean; c >= 1 also the first c chunks.
        clean_chunks = torch.randint(0, len(starts), (batch,), generator=generator, device=device)
        bounds = torch.tensor([1] + starts[1:], device=device)
        clean_end = bounds[clean_chunks]  # (B,) first noised frame
        frame = torch.arange(frames, device=device)
        sigmas = torch.where(frame[None] < clean_end[:, None], torch.zeros_like(sigmas), sigmas)
        return NoisePlan(sigmas, cfg.chunk_size)
    per_frame = _logit_normal((batch, frames), cfg, generator)
    shared = _logit_normal((batch, 1), cfg, generator).expand(batch, frames)
    independent = torch.rand((batch, 1), generator=generator, device=device) < cfg.frame_noise_prob
    sigmas = torch.where(independent, per_frame, shared).clone()
    sigmas[:, 0] = 0.0
    return NoisePlan(sigmas)


def noise_latents(latents: Tensor, noise: Tensor, sigmas: Tensor) -> tuple[Tensor, Tensor]:
    """Noisy model input and velocity target for latents (B, C, T, H, W), per-frame sigmas (B, T).

    Returns `(1 - sigma) * latents + sigma * noise` and `noise - latents`, in float32. Frames
    with sigma = 0 come out bit-identical to `latents`.
    """
    assert latents.shape == noise.shape, f"noise {tuple(noise.shape)} must match latents {tuple(latents.shape)}"
    assert sigmas.shape == (latents.shape[0], latents.shape[2]), (
        f"sigmas must be (B, T) = {(latents.shape[0], latents.shape[2])}, got {tuple(sigmas.shape)}")  # fmt: skip
    x, n = latents.float(), noise.float()
    s = sigmas.float()[:, None, :, None, None]
    return FlowMatchingSchedule.add_noise(x, n, s), FlowMatchingSchedule.velocity_target(x, n)


def flow_matching_loss(
    prediction: Tensor, target: Tensor, loss_mask: Tensor, per_sample: bool = False,
    channel_weights: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Mean squared error over the noised frames: per-frame MSE (B, T) averaged with `loss_mask`,
    over the whole batch at once, or (`per_sample`) within each clip and then over the clips.
    `channel_weights` (C,), mean 1 (`channel_loss_weights`), weigh each latent channel's squared
    error; None weighs them alike.

    Per sample, every clip weighs the same whatever its number of clean frames, so the mean
    over W processes of their batches' losses equals the loss of the whole batch on one
    process (the gradients DDP / FSDP average are those of the global batch)."""
    error = (prediction.float() - target.float()).square()
    if channel_weights is not None:
        error = error * channel_weights.float().view(1, -1, 1, 1, 1)
    per_frame = error.mean(dim=(1, 3, 4))
    if per_sample:
        return ((per_frame * loss_mask).sum(1) / loss_mask.sum(1).clamp_min(1.0)).mean()
    return (per_frame * loss_mask).sum() / loss_mask.sum().clamp_min(1.0)


def channel_loss_weights(latents_std: Tensor, power: float) -> Tensor:
    """Per-channel loss weights (C,) proportional to latents_std ** (2 * power), scaled to mean 1.

    The DiT sees latents scaled to unit variance per channel, so an error of e in channel c is an
    error of e * std_c in the VAE's own latent units. For a linear (PCA-started) code with an
    orthonormal basis the pixel error is that latent error, so power 1 makes the loss pixel MSE
    (the coarse channels that hold most of the image count most) and power 0 weighs the
    low-variance fine-detail channels like the coarse ones."""
    weights = latents_std.detach().double().square().pow(power)
    return (weights / weights.mean()).float()


def text_inputs(
    null: TextEmbedding,
    batch: int,
    states: Tensor | None = None,
    mask: Tensor | None = None,
    present: Tensor | None = None,
    dropout: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Text states (B, L, C) and mask (B, L) for a step, L = the null text's length.

    Clips without text (`present` False, or no `states` at all) and, with probability
    `dropout`, clips with text get the model's null text (`SanaWMTransformer.null_text()`, batch
    1): exactly what the sampler feeds for "no prompt". Given texts (B, L', C) with L' <= L are
    right-padded (mask 0).
    """
    _, length, width = null.states.shape
    null_states = null.states.expand(batch, length, width)
    null_mask = null.mask.long().expand(batch, length)
    if states is None:
        return null_states, null_mask
    assert states.dim() == 3 and states.shape[0] == batch and states.shape[2] == width and states.shape[1] <= length, (
        f"text states must be (B, <= {length}, {width}), got {tuple(states.shape)}")  # fmt: skip
    pad = length - states.shape[1]
    states = torch.nn.functional.pad(states.to(null.states.dtype), (0, 0, 0, pad))
    mask = torch.nn.functional.pad(mask.long(), (0, pad))
    keep = present.bool().clone() if present is not None else torch.ones(batch, dtype=torch.bool, device=states.device)
    if dropout > 0:
        gen_device = generator.device if generator is not None else keep.device
        keep &= (torch.rand(batch, generator=generator, device=gen_device) >= dropout).to(keep.device)
    states = torch.where(keep[:, None, None], states, null_states)
    mask = torch.where(keep[:, None], mask, null_mask)
    return states, mask


__all__ = ["NoisePlan", "channel_loss_weights", "flow_matching_loss", "noise_latents", "sample_noise_plan", "text_inputs"]
