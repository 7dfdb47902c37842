"""Samplers: turn noise into the latents of a video that starts at a given image.

Both modes run flow-matching Euler (`schedule.py`) with per-frame timesteps. Latent frame 0 is
the encoded input image: it is placed in the latents before sampling, its timestep is pinned to
0 throughout (the model sees it as clean) and no step ever changes it.

- `sample_bidirectional`: every latent frame is denoised at once; frames attend both ways.
- `sample_streaming`: chunk-causal generation. The clip is cut into chunks of `chunk_size`
  latent frames (the first chunk also holds frame 0); each chunk is fully denoised while
  reading the model's stream cache of the finished chunks before it, then committed to the
  cache as clean latents (timestep 0), and yielded. GDN layers keep a constant-size state, so
  memory for them does not grow with the number of chunks. With `context_sigma` > 0 a chunk is
  committed noised to that level instead (at its timestep; the image's frame stays clean): the
  stream then leans less on the fine detail of its own output, which in a model that never saw
  its own output in training can otherwise feed back and grow chunk after chunk.

Guidance: besides the conditional prediction, up to two unconditional ones are combined,
    v = v_no_text + cfg * (v_full - v_no_text)                  (text, as SANA-WM does)
    v += (camera_cfg - 1) * (v_full - v_no_camera)               (camera guidance)
each only when its scale differs from 1 (and, for text, when a negative text is given).
"v_no_text" uses the negative text with the camera; "v_no_camera" the prompt without the
camera branches and Plücker rays. Conditional and negative text share one batched call.

Few-step students (`SamplerSettings.few_step`): instead of Euler steps, each step predicts the
clean latents `x - sigma v` and re-noises them with fresh noise to the next level (the rule the
student was distilled with); the last step returns the clean prediction.

Noise comes from a CPU generator seeded with `seed` (the same seed gives the same video on any
device): one draw for the whole clip in bidirectional mode, one per chunk, in order, when
streaming (with `context_sigma`, one more for each chunk committed); few-step sampling draws
again after every step but the last.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from sanawm.chunks import chunk_spans, chunk_starts_for
from sanawm.model import SanaWMTransformer, StreamCache
from sanawm.model.graphs import ChunkGraphs
from sanawm.sampling.schedule import NUM_TRAIN_TIMESTEPS, FlowMatchingSchedule
from sanawm.text import TextEmbedding

#: Called after every model evaluation step with (steps done, steps in total); the total is
#: None for an open-ended stream.
Progress = Callable[[int, int | None], None]


@dataclass
class Conditioning:
    """Everything one video is generated from (batch 1), already in model space.

    first_latent: (1, C, 1, h, w) normalised latent of the input image.
    text: prompt embedding (1, L, C_text) + mask; the null embedding for models without text.
    raymap: (1, T, 20) per-latent-frame cameras; chunk_plucker: (1, P, T, h, w) rays.
    negative_text: embedding of the negative prompt for text guidance (None: no text guidance).
    """

    first_latent: Tensor
    text: TextEmbedding
    raymap: Tensor
    chunk_plucker: Tensor
    negative_text: TextEmbedding | None = None

    @property
    def num_latent_frames(self) -> int:
        return int(self.raymap.shape[1])


@dataclass
class SamplerSettings:
    """Sampling knobs: step count, schedule shift, guidance scales and the noise seed."""

    steps: int
    flow_shift: float
    cfg: float = 1.0
    camera_cfg: float = 1.0
    seed: int = 0
    timesteps: tuple[float, ...] = ()
    """Explicit timesteps (0..1000, from 1000 down) of a few-step student; `steps` equals their count."""
    few_step: bool = False
    """Sample with the few-step rule (see module doc), at `timesteps`, else at `shift(1 - i / steps)`."""
    context_sigma: float = 0.0
    """Streaming: the noise level finished chunks are committed to the caches at (0: clean)."""

    def sigmas(self) -> Tensor:
        """The levels of the run, ending at 0."""
        if self.timesteps:
            return FlowMatchingSchedule.sigmas_from_timesteps(self.timesteps)
        schedule = FlowMatchingSchedule(self.flow_shift)
        return schedule.few_step_sigmas(self.steps) if self.few_step else schedule.sampling_sigmas(self.steps)


def combine_guidance(
    full: Tensor, no_text: Tensor | None, no_camera: Tensor | None, cfg: float, camera_cfg: float
) -> Tensor:
    """Classifier-free guidance over the branches that were evaluated (see module doc)."""
    out = full if no_text is None else no_text + cfg * (full - no_text)
    if no_camera is not None:
        out = out + (camera_cfg - 1.0) * (full - no_camera)
    return out


#: Camera inputs of the frames of one model call: raymap (1, t, 20), chunk_plucker (1, P, t, h, w).
Camera = tuple[Tensor, Tensor]


@dataclass
class _Branch:
    """One batched model call of the guidance: its text rows, whether it sees the camera, and
    (when streaming) its own cache of finished chunks, since hidden states differ per branch."""

    model: SanaWMTransformer
    text_states: Tensor
    text_mask: Tensor
    camera: bool
    cache: StreamCache | None
    graphs: ChunkGraphs | None = None
    """Replays the cache-reading call from CUDA graphs (streaming with `cuda_graphs`)."""

    def _inputs(self, x: Tensor, timestep: Tensor, camera: Camera) -> tuple:
        batch = self.text_states.shape[0]
        raymap = plucker = None
        if self.camera:
            raymap = camera[0].expand(batch, -1, -1)
            plucker = camera[1].expand(batch, -1, -1, -1, -1)
        x = x.expand(batch, -1, -1, -1, -1)
        return x, timestep.expand(batch, -1), self.text_states, self.text_mask, raymap, plucker

    def predict(self, x: Tensor, timestep: Tensor, camera: Camera) -> Tensor:
        """Velocity (batch, C, t, h, w) for latents x (1, C, t, h, w) seen with `camera`."""
        if self.graphs is not None:
            return self.graphs(self.cache, *self._inputs(x, timestep, camera)).float()
        return self.model(*self._inputs(x, timestep, camera), cache=self.cache).float()

    def commit(self, latents: Tensor, timestep: Tensor, camera: Camera) -> None:
        """Append finished latents (1, C, t, h, w) to this branch's cache, seen at `timestep` (1, t)."""
        self.model.commit_to_cache(self.cache, *self._inputs(latents, timestep, camera))


@dataclass
class StreamWindow:
    """How much of the past the softmax blocks attend to when streaming (see `StreamCache`):
    the last `chunks` chunks (None: all of them) plus the first `sink` latent frames."""

    chunks: int | None = None
    sink: int = 0


class _GuidedModel:
    """The guided velocity: the conditional call (batched with the negative text when text
    guidance is on) and, for camera guidance, a call without camera inputs."""

    def __init__(
        self,
        model: SanaWMTransformer,
        text: TextEmbedding,
        negative_text: TextEmbedding | None,
        settings: SamplerSettings,
        device: torch.device,
        window: StreamWindow | None,
        cuda_graphs: bool = False,
    ) -> None:
        """`window`: stream with caches bounded that way (None: one call for the whole clip);
        `cuda_graphs`: replay the streaming calls from CUDA graphs where they apply
        (`sanawm.model.graphs`; eager elsewhere, e.g. on the CPU)."""
        self.settings = settings
        self.text_guidance = negative_text is not None and settings.cfg != 1.0
        texts = [negative_text, text] if self.text_guidance else [text]
        states = torch.cat([t.states for t in texts]).to(device)
        mask = torch.cat([t.mask for t in texts]).to(device)

        def branch(rows: slice, camera: bool) -> _Branch:
            cache = None if window is None else model.new_stream_cache(window.chunks, window.sink)
            graphs = ChunkGraphs(model) if cuda_graphs and cache is not None else None
            return _Branch(model, states[rows], mask[rows], camera, cache, graphs)

        self.main = branch(slice(None), camera=True)
        self.no_camera = branch(slice(-1, None), camera=False) if settings.camera_cfg != 1.0 else None

    @property
    def caches(self) -> list[StreamCache]:
        return [b.cache for b in (self.main, self.no_camera) if b is not None and b.cache is not None]

    @torch.no_grad()
    def velocity(self, x: Tensor, timestep: Tensor, camera: Camera) -> Tensor:
        """Guided velocity for latents `x` (1, C, t, h, w) seen with `camera`."""
        out = self.main.predict(x, timestep, camera)
        full, no_text = (out[1:], out[:1]) if self.text_guidance else (out, None)
        no_camera = self.no_camera.predict(x, timestep, camera) if self.no_camera else None
        return combine_guidance(full, no_text, no_camera, self.settings.cfg, self.settings.camera_cfg)

    @torch.no_grad()
    def commit(self, latents: Tensor, timestep: Tensor, camera: Camera) -> None:
        """Append finished latents, seen at `timestep` (1, t), to every branch's stream cache."""
        for branch in (self.main, self.no_camera):
            if branch is not None:
                branch.commit(latents, timestep, camera)


def _denoise(
    guided: _GuidedModel,
    latents: Tensor,
    pinned: Tensor,
    camera: Camera,
    sigmas: Tensor,
    on_step: Callable[[], None],
    renoise: torch.Generator | None = None,
) -> Tensor:
    """Run the whole schedule on latents (1, C, t, h, w) seen with `camera`.

    `pinned` (t,) bool marks clean condition frames: timestep 0, never updated. With `renoise`
    (the few-step rule) fresh noise is drawn from it after every step but the last.
    """
    schedule = FlowMatchingSchedule(guided.settings.flow_shift)
    timesteps = schedule.timestep(sigmas[:-1])  # float32, as the reference scheduler's
    zero = torch.zeros((), device=latents.device)
    for i, t in enumerate(timesteps.to(latents.device)):
        frame_t = torch.where(pinned, zero, t).unsqueeze(0)  # (1, t)
        velocity = guided.velocity(latents, frame_t, camera)
        sigma = (frame_t / NUM_TRAIN_TIMESTEPS).view(1, 1, -1, 1, 1)
        sigma_next = schedule.next_sigma(sigmas, sigma)
        if renoise is None:
            stepped = schedule.euler_step(latents, velocity, sigma, sigma_next)
        else:
            clean = schedule.x0_from_velocity(latents, velocity, sigma)
            last = i == len(timesteps) - 1  # steps to 0: no new noise
            fresh = clean if last else _noise(renoise, latents, latents.shape[2])
            stepped = schedule.add_noise(clean, fresh, sigma_next)
        latents = torch.where(pinned.view(1, 1, -1, 1, 1), latents, stepped)
        on_step()
    return latents


def _check(cond: Conditioning, settings: SamplerSettings) -> Tensor:
    """The schedule's levels, after asserting the conditioning's shapes. `WorldModel.prepare`
    (and the model folder reader) validate what the user gave; a failure here is a bug."""
    assert not settings.timesteps or len(settings.timesteps) == settings.steps, settings
    sigmas = settings.sigmas()
    first, plucker = cond.first_latent, cond.chunk_plucker
    assert first.dim() == 5 and first.shape[0] == 1 and first.shape[2] == 1, (
        f"first_latent must be (1, C, 1, h, w), got {tuple(first.shape)}")  # fmt: skip
    raymap = cond.raymap
    assert raymap.dim() == 3 and raymap.shape[0] == 1, f"raymap must be (1, T, 20), got {tuple(raymap.shape)}"
    assert plucker.dim() == 5 and plucker.shape[2] == cond.num_latent_frames, (
        f"chunk_plucker must be (1, P, T={cond.num_latent_frames}, h, w), got {tuple(plucker.shape)}")  # fmt: skip
    assert plucker.shape[3:] == first.shape[3:], (
        f"chunk_plucker grid {tuple(plucker.shape[3:])} does not match the latent grid "
        f"{tuple(first.shape[3:])}")  # fmt: skip
    return sigmas


def _noise(generator: torch.Generator, like: Tensor, frames: int) -> Tensor:
    shape = (1, like.shape[1], frames, *like.shape[3:])
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(like.device)


def _counter(progress: Progress | None, total: int | None) -> Callable[[], None]:
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    return step


def sample_bidirectional(
    model: SanaWMTransformer, cond: Conditioning, settings: SamplerSettings, progress: Progress | None = None
) -> Tensor:
    """Latents (1, C, T, h, w) of the whole clip, denoised jointly (float32)."""
    sigmas = _check(cond, settings)
    T = cond.num_latent_frames
    generator = torch.Generator().manual_seed(settings.seed)
    latents = _noise(generator, cond.first_latent, T)
    latents[:, :, :1] = cond.first_latent.float()
    pinned = torch.arange(T, device=latents.device) == 0
    device = cond.first_latent.device
    guided = _GuidedModel(model, cond.text, cond.negative_text, settings, device, window=None)
    camera = (cond.raymap, cond.chunk_plucker)
    renoise = generator if settings.few_step else None
    return _denoise(guided, latents, pinned, camera, sigmas, _counter(progress, settings.steps), renoise)


class ChunkSampler:
    """Chunk-causal generation driven one chunk at a time (the engine of streaming).

    `sample(start, stop, camera)` denoises latent frames [start, stop) (the next chunk, in
    order, starting at 0) while reading the stream caches of the chunks before it, and
    returns their clean latents (1, C, t, h, w); `commit(latents, camera)` then appends them
    to the caches (skip it for a chunk that is never read again). The cameras of a chunk are
    only needed when it is sampled, so they can be decided chunk by chunk.
    """

    def __init__(
        self,
        model: SanaWMTransformer,
        first_latent: Tensor,
        text: TextEmbedding,
        negative_text: TextEmbedding | None,
        settings: SamplerSettings,
        window: StreamWindow | None = None,
        progress: Progress | None = None,
        total_chunks: int | None = None,
        cuda_graphs: bool = False,
    ) -> None:
        """`cuda_graphs`: see `_GuidedModel` (off by default: the graphs hold a copy of the
        window's keys / values and their own activations, and are only measured on an H200)."""
        self.sigmas = settings.sigmas()
        self.few_step = settings.few_step
        self.first_latent = first_latent
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.guided = _GuidedModel(
            model, text, negative_text, settings, first_latent.device, window or StreamWindow(), cuda_graphs
        )
        total = None if total_chunks is None else settings.steps * total_chunks
        self.step = _counter(progress, total)
        self.next_start = 0
        self.context_sigma = settings.context_sigma

    @property
    def caches(self) -> list[StreamCache]:
        return self.guided.caches

    def sample(self, start: int, stop: int, camera: Camera) -> Tensor:
        assert start == self.next_start and stop > start, (start, stop, self.next_start)
        latents = _noise(self.generator, self.first_latent, stop - start)
        pinned = torch.zeros(stop - start, dtype=torch.bool, device=latents.device)
        if start == 0:
            latents[:, :, :1] = self.first_latent.float()
            pinned[0] = True
        self.next_start = stop
        renoise = self.generator if self.few_step else None
        return _denoise(self.guided, latents, pinned, camera, self.sigmas, self.step, renoise)

    def commit(self, latents: Tensor, camera: Camera) -> None:
        """Append the chunk just sampled (clean latents) to the caches: as they are, or noised
        to `context_sigma` with a draw from the run's generator (the image's frame stays clean)."""
        frames = latents.shape[2]
        sigma = torch.full((frames,), float(self.context_sigma))
        if self.next_start == frames:  # the first chunk: it holds the input image's frame,
            sigma[0] = 0.0  # clean in training and sampling alike
        if self.context_sigma > 0:
            noise = _noise(self.generator, latents, frames)
            s = sigma.view(1, 1, -1, 1, 1).to(latents.device)
            latents = FlowMatchingSchedule.add_noise(latents, noise, s).to(latents.dtype)
        timestep = FlowMatchingSchedule.timestep(sigma)[None].to(latents.device)
        self.guided.commit(latents, timestep, camera)


def sample_streaming(
    model: SanaWMTransformer,
    cond: Conditioning,
    settings: SamplerSettings,
    chunk_size: int,
    progress: Progress | None = None,
    window: StreamWindow | None = None,
    cuda_graphs: bool = False,
) -> Iterator[Tensor]:
    """Yield the clean latents (1, C, t, h, w) of each chunk, in order, as soon as it is done
    (`cuda_graphs`: see `ChunkSampler`)."""
    _check(cond, settings)
    assert isinstance(chunk_size, int) and chunk_size >= 1, f"chunk_size must be a positive integer, got {chunk_size!r}"
    bounds = chunk_spans(chunk_starts_for(cond.num_latent_frames, chunk_size), cond.num_latent_frames)
    sampler = ChunkSampler(
        model, cond.first_latent, cond.text, cond.negative_text, settings, window, progress, len(bounds), cuda_graphs
    )
    for start, stop in bounds:
        # Copies, as a session packs them chunk by chunk: a chunk holds only its own cameras.
        camera = (cond.raymap[:, start:stop].clone(), cond.chunk_plucker[:, :, start:stop].clone())
        latents = sampler.sample(start, stop, camera)
        if stop < cond.num_latent_frames:  # the last chunk is never read again
            sampler.commit(latents, camera)
        yield latents
