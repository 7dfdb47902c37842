"""Adapter for the LTX-2 video VAE (diffusers `AutoencoderKLLTX2Video`) used by the official models.

The official SANA-WM release encodes 704x1280 video into 128-channel latents with 32x spatial
and 8x temporal compression. Latents are normalised as SANA-WM trained on them:
`(z - latents_mean) * scaling_factor / latents_std`, with the statistics stored in the VAE.
Weights are read from a local diffusers-format folder only (`config.json` +
`diffusion_pytorch_model.safetensors`); nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sanawm.errors import UserInputError
from sanawm.vae.base import ChunkDecoder, VideoVAE

# How SANA-WM runs the LTX-2 VAE (its numerics were trained this way): frame-wise with temporal
# tiles of 96 sample frames advancing by 64.
_TILE_MIN_FRAMES = 96
_TILE_STRIDE_FRAMES = 64

_SPATIAL_KINDS = ("spatial", "spatiotemporal")
_TEMPORAL_KINDS = ("temporal", "spatiotemporal")


def _compression(config) -> tuple[int, int]:
    """(temporal, spatial) compression implied by the encoder's down-sampling stages.

    Computed from the stage types because the library's derived ratio counts every scaling
    stage as spatial, which is wrong for LTX-2's mixed spatial/temporal stages when the config
    does not state the ratios.
    """
    scaling = config.spatio_temporal_scaling
    kinds = config.downsample_type
    if isinstance(scaling, bool):
        scaling = (scaling,) * len(kinds)
    spatial = config.patch_size * 2 ** sum(1 for s, k in zip(scaling, kinds) if s and k in _SPATIAL_KINDS)
    temporal = config.patch_size_t * 2 ** sum(1 for s, k in zip(scaling, kinds) if s and k in _TEMPORAL_KINDS)
    return temporal, spatial


class LTX2VAE(VideoVAE):
    """`VideoVAE` over a diffusers `AutoencoderKLLTX2Video`.

    `context_latents` is how many earlier latent frames the chunk decoder re-decodes in front of
    each new chunk, so frames near a chunk boundary see (most of) their temporal context; the
    LTX-2 decoder has no carried state, so chunked decoding approximates the one-shot decode.
    """

    def __init__(self, autoencoder, context_latents: int = 2) -> None:
        super().__init__()
        self.autoencoder = autoencoder.eval()
        self.temporal_stride, self.spatial_stride = _compression(autoencoder.config)
        # diffusers derives these ratios the same miscounting way when the config leaves them out
        # (64x16 for the release's 32x8 layout) and sizes its latent tiles from them: the tiled
        # decode then cuts 704x1280 latents into tiles one row high, which its convs refuse.
        autoencoder.spatial_compression_ratio = self.spatial_stride
        autoencoder.temporal_compression_ratio = self.temporal_stride
        self.latent_channels = int(autoencoder.config.latent_channels)
        self.scaling_factor = float(autoencoder.config.scaling_factor)
        # The first latent of a decode is special: it must be context, never output.
        assert context_latents >= 1, f"context_latents must be >= 1, got {context_latents}"
        self.context_latents = context_latents
        autoencoder.enable_tiling()
        autoencoder.use_framewise_encoding = True
        autoencoder.use_framewise_decoding = True
        autoencoder.tile_sample_min_num_frames = _TILE_MIN_FRAMES
        autoencoder.tile_sample_stride_num_frames = _TILE_STRIDE_FRAMES

    @classmethod
    def load(cls, directory: str | Path, dtype: torch.dtype = torch.float32) -> LTX2VAE:
        """Load a diffusers-format LTX-2 VAE folder (local files only)."""
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise UserInputError(f"LTX-2 VAE config not found: {directory / 'config.json'}")
        try:
            from diffusers import AutoencoderKLLTX2Video
        except ImportError:
            raise UserInputError(
                "the LTX-2 VAE needs diffusers: pip install 'sanawm[official]'"
            ) from None
        try:
            autoencoder = AutoencoderKLLTX2Video.from_pretrained(
                str(directory), local_files_only=True, torch_dtype=dtype
            )
        except (OSError, ValueError, RuntimeError) as err:
            raise UserInputError(f"cannot load the LTX-2 VAE from {directory}: {err}") from None
        return cls(autoencoder)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.autoencoder.latents_mean.view(1, -1, 1, 1, 1).to(like)
        std = self.autoencoder.latents_std.view(1, -1, 1, 1, 1).to(like)
        return mean, std

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        self.check_video(video)
        z = self.autoencoder.encode(video.to(self.device, self.dtype)).latent_dist.mode()
        mean, std = self._stats(z)
        return (z - mean) * self.scaling_factor / std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self.check_latents(latents)
        mean, std = self._stats(latents)
        z = (latents / self.scaling_factor * std + mean).to(self.device, self.dtype)
        return self.autoencoder.decode(z, return_dict=False)[0]

    def chunk_decoder(self) -> ChunkDecoder:
        return _ContextChunkDecoder(self)


class _ContextChunkDecoder(ChunkDecoder):
    """Decodes each chunk together with the last few latent frames before it, keeping only the
    new chunk's frames (the first latent of any decode is the 'single frame' one, so it must be
    context, never output, after the first chunk)."""

    def __init__(self, vae: LTX2VAE) -> None:
        self.vae = vae
        self.history: torch.Tensor | None = None

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self.vae.check_latents(latents)
        if self.history is None:
            frames = self.vae.decode(latents)
        else:
            decoded = self.vae.decode(torch.cat([self.history, latents], dim=2))
            frames = decoded[:, :, -self.vae.temporal_stride * latents.shape[2] :]
        past = latents if self.history is None else torch.cat([self.history, latents], dim=2)
        self.history = past[:, :, -self.vae.context_latents :]
        return frames
