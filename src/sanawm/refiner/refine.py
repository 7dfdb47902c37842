"""SANA-WM stage 2: refine stage-1 latents block by block with the LTX-2 DiT.

For each block of `block_size` latent frames after the sink:

    x = (1 - s0) * z_block + s0 * eps          one eps per block, drawn in block order
    x <- x + (s_next - s) * v(x, s)            Euler over sigmas (s0 = 0.909375 ... 0)
    one pass at sigma 0 over the refined block writes its K/V into the history

where v is the LTX-2 DiT's velocity with its video self-attention restricted to the sliding
window of `sanawm.refiner.window` and RoPE at the frames' absolute positions (time in seconds:
the LTX-2 pixel-frame index divided by `fps`). The sink frames are returned unchanged. This is
the contract of diffusers' `SanaWMLTX2Refiner` (0.42.1); with the same generator, prompt
embeddings and weights the results agree (tests/test_refiner.py).

`StreamingRefiner` takes stage-1 latents in pieces (e.g. as streaming chunks finish) and hands
back refined frames as soon as their block is complete, holding only the window and the
unfinished block; `refine_latents` runs it over a whole clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sanawm.refiner.window import Phase, SlidingWindow, windowed_self_attention

DISTILLED_SIGMAS = (0.909375, 0.725, 0.421875, 0.0)


@dataclass(frozen=True)
class RefineSettings:
    """The refiner's schedule and window (defaults: the released model's)."""

    block_size: int = 3
    """Latent frames refined together."""
    kv_max_frames: int = 11
    """Frames of K/V a block sees besides its own: the sink plus the most recent history."""
    sink_size: int = 1
    """Leading stage-1 frames used, unrefined, as the attention sink."""
    sigmas: tuple[float, ...] = DISTILLED_SIGMAS
    """Descending noise levels; the first is the SDEdit start, the last must be 0."""

    def __post_init__(self) -> None:
        for name in ("block_size", "sink_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.kv_max_frames, bool) or not isinstance(self.kv_max_frames, int):
            raise ValueError(f"kv_max_frames must be an integer, got {self.kv_max_frames!r}")
        if self.kv_max_frames <= self.sink_size:
            raise ValueError(
                f"kv_max_frames ({self.kv_max_frames}) must exceed sink_size ({self.sink_size}): the window "
                "needs room for at least one frame of history"
            )
        s = [float(x) for x in self.sigmas]
        if len(s) < 2 or s[-1] != 0.0 or not 0.0 < s[0] <= 1.0 or any(a <= b for a, b in zip(s, s[1:])):
            raise ValueError(f"sigmas must decrease strictly from a value in (0, 1] to 0, got {self.sigmas!r}")


class StreamingRefiner:
    """Refine one clip's stage-1 latents (B, C, F, H, W) pushed in frame order, in pieces.

    `push(latents)` returns the refined frames that became ready (the sink frames unchanged
    first), or None; `finish()` refines the short last block, if any. Refined frames come back
    in the transformer's dtype. `transformer` is diffusers' `LTX2VideoTransformer3DModel`;
    `prompt_embeds` (1 or B, L, caption) and `prompt_mask` (same, L) are its text inputs (the
    video output of `LTX2TextConnectors`).
    """

    def __init__(
        self,
        transformer,
        prompt_embeds: torch.Tensor,
        prompt_mask: torch.Tensor,
        *,
        fps: float,
        generator: torch.Generator,
        settings: RefineSettings = RefineSettings(),
    ) -> None:
        config = transformer.config
        if config.cross_attn_mod or config.audio_cross_attn_mod:
            raise ValueError("the refiner runs LTX-2.0 transformers (no prompt-modulated cross-attention)")
        if config.patch_size_t != 1:
            raise ValueError(f"the refiner needs patch_size_t = 1, got {config.patch_size_t}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps!r}")
        self.transformer = transformer
        self.settings = settings
        self.fps = float(fps)
        self.generator = generator
        self.prompt_embeds = prompt_embeds
        self.prompt_mask = prompt_mask
        # The schedule as the reference keeps it: float32 values.
        self.sigmas = torch.tensor(settings.sigmas, dtype=torch.float32).tolist()
        param = next(transformer.parameters())
        self.dtype = param.dtype
        self.window: SlidingWindow | None = None
        self.pending: torch.Tensor | None = None  # stage-1 frames not yet refined
        self.next_frame = 0  # absolute index of pending's first frame
        self.history_frames = 0
        # Set from the first latents by `_start`: clip geometry, text and dummy audio inputs.
        self.batch = self.height = self.width = self.tokens_per_frame = 0

    # ---- public --------------------------------------------------------------------------

    @torch.no_grad()
    def push(self, latents: torch.Tensor) -> torch.Tensor | None:
        """Add the next stage-1 frames; return the refined frames that are now complete."""
        if latents.dim() != 5:
            raise ValueError(f"latents must be (B, C, F, H, W), got {tuple(latents.shape)}")
        latents = latents.to(self.dtype)
        if self.pending is None:
            self._start(latents)
            self.pending = latents
        else:
            if latents.shape[:2] != self.pending.shape[:2] or latents.shape[3:] != self.pending.shape[3:]:
                raise ValueError(f"latents {tuple(latents.shape)} do not continue {tuple(self.pending.shape)}")
            self.pending = torch.cat([self.pending, latents], dim=2)
        done = []
        if self.window.phase is Phase.SINK and self.pending.shape[2] >= self.settings.sink_size:
            done.append(self._capture_sink())
        while self.window.phase is not Phase.SINK and self.pending.shape[2] >= self.settings.block_size:
            done.append(self._refine_block(self.settings.block_size))
        return torch.cat(done, dim=2) if done else None

    @torch.no_grad()
    def finish(self) -> torch.Tensor | None:
        """Refine the frames left over (fewer than a block); None when there are none."""
        frames = self.next_frame + (0 if self.pending is None else self.pending.shape[2])
        if frames <= self.settings.sink_size:
            raise ValueError(f"the clip has {frames} latent frame(s); the refiner needs more than sink_size="
                             f"{self.settings.sink_size}")  # fmt: skip
        if self.pending.shape[2] == 0:
            return None
        return self._refine_block(self.pending.shape[2])

    # ---- blocks ---------------------------------------------------------------------------

    def _start(self, latents: torch.Tensor) -> None:
        batch, _, _, height, width = latents.shape
        p = self.transformer.config.patch_size
        if height % p or width % p:
            raise ValueError(f"latent size {height}x{width} is not a multiple of the patch size {p}")
        self.batch, self.height, self.width = batch, height, width
        self.tokens_per_frame = (height // p) * (width // p)
        s = self.settings
        self.window = SlidingWindow(
            num_layers=len(self.transformer.transformer_blocks),
            sink_tokens=s.sink_size * self.tokens_per_frame,
            max_history_tokens=(s.kv_max_frames - s.sink_size) * self.tokens_per_frame,
            block_tokens=s.block_size * self.tokens_per_frame,
        )
        if self.prompt_embeds.shape[0] not in (1, batch) or self.prompt_mask.shape[0] != self.prompt_embeds.shape[0]:
            raise ValueError(f"prompt batch {self.prompt_embeds.shape[0]} does not fit latent batch {batch}")
        device = latents.device
        self.text = self.prompt_embeds.to(device, self.dtype).expand(batch, -1, -1)
        self.text_mask = self.prompt_mask.to(device).expand(batch, -1)
        # The LTX-2 forward always runs its audio stream too; with modalities isolated, one
        # zero audio token and one zero audio text token keep it negligible and cannot reach
        # the video stream.
        config = self.transformer.config
        self.audio = torch.zeros(batch, 1, config.audio_in_channels, device=device, dtype=self.dtype)
        self.audio_text = torch.zeros(batch, 1, config.caption_channels, device=device, dtype=self.dtype)

    def _take(self, count: int) -> tuple[torch.Tensor, int]:
        frames, start = self.pending[:, :, :count], self.next_frame
        self.pending = self.pending[:, :, count:]
        self.next_frame += count
        return frames, start

    def _capture_sink(self) -> torch.Tensor:
        sink, start = self._take(self.settings.sink_size)
        with windowed_self_attention(self.transformer, self.window):
            self.window.phase = Phase.SINK
            self._velocity(sink, 0.0, self._coords(start, sink.shape[2]))
        self.window.phase = Phase.DENOISE
        return sink

    def _refine_block(self, count: int) -> torch.Tensor:
        clean, start = self._take(count)
        s = self.settings
        window = self.window
        # The sink sits at the positions just before the oldest history frame.
        sink_start = start - self.history_frames - s.sink_size
        sink_rope = self.transformer.rope(self._coords(sink_start, s.sink_size), device=clean.device)
        window.place_sink(sink_rope, self.transformer.config.rope_type)

        noise = torch.randn(clean.shape, generator=self.generator, device=self.generator.device, dtype=self.dtype)
        sigma0 = self.sigmas[0]
        x = ((1.0 - sigma0) * clean.float() + sigma0 * noise.to(clean.device).float()).to(self.dtype)
        coords = self._coords(start, count)
        with windowed_self_attention(self.transformer, window):
            window.phase = Phase.DENOISE
            for sigma, sigma_next in zip(self.sigmas[:-1], self.sigmas[1:]):
                velocity = self._velocity(x, sigma, coords)
                x = (x.float() + (sigma_next - sigma) * velocity).to(self.dtype)
            window.phase = Phase.COMMIT
            self._velocity(x, 0.0, coords)
        window.commit(count * self.tokens_per_frame)
        window.phase = Phase.DENOISE
        self.history_frames = min(self.history_frames + count, s.kv_max_frames - s.sink_size)
        return x

    # ---- the transformer ------------------------------------------------------------------

    def _coords(self, start: int, count: int) -> torch.Tensor:
        """LTX-2 RoPE coordinates (B, 3, tokens, 2) of latent frames [start, start + count)."""
        coords = self.transformer.rope.prepare_video_coords(
            self.batch, start + count, self.height, self.width, self.audio.device, fps=self.fps
        )
        return coords[:, :, start * self.tokens_per_frame :]

    def _velocity(self, x: torch.Tensor, sigma: float, coords: torch.Tensor) -> torch.Tensor:
        """The DiT's flow velocity (float32, shaped like x) at noise level `sigma`."""
        config = self.transformer.config
        # Every token shares sigma: one timestep row, broadcast by the DiT's modulation.
        timestep = torch.full(
            (self.batch, 1), sigma * config.timestep_scale_multiplier, dtype=torch.float32, device=x.device
        )
        out = self.transformer(
            hidden_states=_patchify(x, config.patch_size),
            audio_hidden_states=self.audio,
            encoder_hidden_states=self.text,
            audio_encoder_hidden_states=self.audio_text,
            timestep=timestep,
            encoder_attention_mask=self.text_mask,
            video_coords=coords,
            audio_num_frames=1,
            fps=self.fps,
            isolate_modalities=True,
            return_dict=False,
        )[0]
        return _unpatchify(out.float(), x.shape, config.patch_size)


def refine_latents(
    transformer,
    latents: torch.Tensor,
    prompt_embeds: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    fps: float,
    generator: torch.Generator,
    block_size: int = 3,
    kv_max_frames: int = 11,
    sink_size: int = 1,
    sigmas: tuple[float, ...] = DISTILLED_SIGMAS,
) -> torch.Tensor:
    """Refine a whole clip's stage-1 latents (B, C, F, H, W); see `StreamingRefiner`."""
    settings = RefineSettings(block_size, kv_max_frames, sink_size, tuple(sigmas))
    refiner = StreamingRefiner(transformer, prompt_embeds, prompt_mask, fps=fps, generator=generator, settings=settings)
    parts = [refiner.push(latents), refiner.finish()]
    return torch.cat([p for p in parts if p is not None], dim=2)


def _patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, F, H, W) -> (B, F * H/p * W/p, C * p * p), tokens in (f, h, w) order."""
    b, c, f, h, w = x.shape
    x = x.reshape(b, c, f, h // p, p, w // p, p)
    return x.permute(0, 2, 3, 5, 1, 4, 6).reshape(b, f * (h // p) * (w // p), c * p * p)


def _unpatchify(tokens: torch.Tensor, shape: torch.Size, p: int) -> torch.Tensor:
    b, c, f, h, w = shape
    x = tokens.reshape(b, f, h // p, w // p, c, p, p)
    return x.permute(0, 4, 1, 2, 5, 3, 6).reshape(b, c, f, h, w)
