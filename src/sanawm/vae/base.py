"""What the world model needs from a video autoencoder ("tokenizer"), whatever its architecture.

Pixels are (B, 3, F, H, W) in [-1, 1] (`VideoVAE.preprocess` / `postprocess` convert from / to
uint8 RGB frames (B, F, H, W, 3), the only place that conversion is written); latents are
(B, C, T, H / s, W / s), already normalised per channel the way the DiT was trained on them. Temporal compression is causal with the first
frame alone: F = stride_t * (T - 1) + 1 frames <-> T latent frames, so latent frame 0 encodes
exactly the first image (the DiT's clean condition) and latent frame i >= 1 the raw frames
stride_t * (i - 1) + 1 ... stride_t * i.
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from sanawm.errors import UserInputError

# Frames converted at a time by `VideoVAE.postprocess`.
_POSTPROCESS_FRAMES = 16


class ChunkDecoder(abc.ABC):
    """Decodes a latent video chunk by chunk, in order, as the chunks become available.

    `decode(chunk)` takes the next latent frames (B, C, t, h, w) and returns the pixel frames
    that belong to them: `1 + stride_t * (t - 1)` frames for the first chunk, `stride_t * t`
    after that. Concatenating the outputs gives the full decode of the concatenated chunks.
    """

    @abc.abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


class VideoVAE(nn.Module, abc.ABC):
    """A video autoencoder with causal, first-frame-alone temporal compression."""

    #: Pixel frames per latent frame (after the first) and pixels per latent pixel.
    temporal_stride: int
    spatial_stride: int
    #: Channels of a latent frame.
    latent_channels: int

    @property
    def strides(self) -> tuple[int, int, int]:
        """(temporal, spatial, spatial): the `vae_stride` the camera packing expects."""
        return (self.temporal_stride, self.spatial_stride, self.spatial_stride)

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the weights: what `encode` / `decode` inputs should be cast to."""
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return next(self.parameters()).device

    # ---- pixels <-> uint8 frames ----------------------------------------------------------

    @staticmethod
    def preprocess(frames: torch.Tensor) -> torch.Tensor:
        """uint8 RGB frames (B, F, H, W, 3) -> pixels (B, 3, F, H, W) float32 in [-1, 1]."""
        return frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0

    @staticmethod
    def postprocess(video: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, F, H, W), roughly in [-1, 1] -> uint8 RGB frames (B, F, H, W, 3)
        (clamped to [-1, 1], rounded to the nearest level)."""
        b, _, f, h, w = video.shape
        frames = torch.empty(b, f, h, w, 3, dtype=torch.uint8, device=video.device)
        # A few frames at a time, in place: the float32 copy of a whole 961-frame 704x1280 clip
        # alone is 10.4 GB, and out-of-place clamp / add / scale / round held several of them.
        for start in range(0, f, _POSTPROCESS_FRAMES):
            part = video[:, :, start : start + _POSTPROCESS_FRAMES].to(torch.float32, copy=True)  # never the input
            part = part.clamp_(-1, 1).add_(1).mul_(127.5).round_()
            frames[:, start : start + _POSTPROCESS_FRAMES] = part.permute(0, 2, 3, 4, 1)
        return frames

    @abc.abstractmethod
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, F, H, W) in [-1, 1] -> normalised latents (B, C, T, h, w), deterministic."""

    @abc.abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, T, h, w) -> pixels (B, 3, F, H, W), roughly in [-1, 1]."""

    @abc.abstractmethod
    def chunk_decoder(self) -> ChunkDecoder:
        """A fresh decoder for one video delivered chunk by chunk (see `ChunkDecoder`)."""

    # ---- frame / size arithmetic shared by every VAE ------------------------------------

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames for `num_frames` pixel frames (which must be stride_t * k + 1)."""
        self.check_num_frames(num_frames)
        return (num_frames - 1) // self.temporal_stride + 1

    def pixel_frames(self, latent_frames: int) -> int:
        """Pixel frames decoded from `latent_frames` latent frames."""
        return self.temporal_stride * (latent_frames - 1) + 1

    # User-facing checks (UserInputError) for settings a user chose: a training config's
    # frame count and image size. `encode` / `decode` only assert shapes (see below).

    def check_num_frames(self, num_frames: int) -> None:
        s = self.temporal_stride
        if num_frames < 1 or (num_frames - 1) % s:
            raise UserInputError(
                f"this VAE needs a frame count of the form {s}k+1 (1, {s + 1}, {2 * s + 1}, ...), "
                f"got {num_frames}"
            )

    def check_image_size(self, height: int, width: int) -> None:
        s = self.spatial_stride
        if height < s or width < s or height % s or width % s:
            raise UserInputError(
                f"image size {height}x{width} is impossible for this VAE: height and width must be "
                f"positive multiples of {s}"
            )

    def check_video(self, video: torch.Tensor) -> None:
        """Assert `encode`'s input shape (its callers made the video; a mismatch is a bug)."""
        t, s = self.temporal_stride, self.spatial_stride
        assert video.dim() == 5 and video.shape[1] == 3, f"video must be (B, 3, F, H, W), got {tuple(video.shape)}"
        F, H, W = video.shape[2:]
        assert F >= 1 and (F - 1) % t == 0, f"this VAE needs a frame count of the form {t}k+1, got {F}"
        assert H >= s and W >= s and H % s == 0 and W % s == 0, f"image size {H}x{W}: not positive multiples of {s}"

    def check_latents(self, latents: torch.Tensor) -> None:
        """Assert `decode`'s input shape."""
        assert latents.dim() == 5 and latents.shape[1] == self.latent_channels, (
            f"latents must be (B, {self.latent_channels}, T, h, w), got shape {tuple(latents.shape)}")  # fmt: skip
