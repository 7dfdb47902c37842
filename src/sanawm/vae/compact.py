"""A compact causal 3D-conv video VAE for the embedded (CPU-sized) world model.

Layout: spatial patchify, then per resolution level a few residual blocks and a learned 2x
down-sampling (space, and optionally time), a KL bottleneck, and the mirror image to decode.
Every temporal operation is causal, so latent frame i depends on pixel frames <= its own and
a video can be decoded chunk by chunk with exactly the one-shot result (the decoder keeps a
few past frames per layer in a `_ConvState`):

- `CausalConv3d` pads time on the left only: with past frames when streaming, with copies of
  the first frame at the start of a video.
- Temporal down-sampling pairs frames (x0, x0), (x1, x2), (x3, x4), ...: the first frame is
  duplicated so it gets a latent of its own, which is what makes frame counts 2^n k + 1.
- Temporal up-sampling is the inverse: every latent frame unfolds into two, and the first
  output of a video (the duplicate) is dropped.
- Normalisation is an RMS norm over channels of each pixel of each frame: no statistics
  over time, so nothing leaks backwards.

Optionally (`linear_shortcut`) a linear code runs beside the convolutions: each latent frame's
pixels (the first frame alone, later ones in groups of stride_t frames), folded spatially into
channels, map linearly onto the latent mean, and the latent maps linearly back onto its
pixels; the convolutional paths add to both. Initialised as the principal components of
training frames (`sanawm.train.vae.fit_linear_shortcut`) with the convolutional outputs at
zero, the VAE starts as the best linear code of its size (the residual idea of DC-AE's
space-to-channel shortcuts) and training only has to learn what a linear code misses.

Latents leave `encode` normalised per channel with `latents_mean` / `latents_std` (buffers
saved with the weights; the trainer measures them on data and calls `set_latent_stats`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from sanawm.errors import UserInputError
from sanawm.jsonfile import read_json_object
from sanawm.vae.base import ChunkDecoder, VideoVAE

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class CompactVAEConfig:
    """Shape of a `CompactVAE`.

    `channels[i]` is the width at resolution level i (level 0 right after patchify); every
    step to the next level halves height and width, and also time where the matching entry of
    `temporal_downsample` is True. Spatial stride = patch_size * 2 ** (levels - 1); temporal
    stride = 2 ** (number of True entries).
    """

    latent_channels: int = 16
    channels: tuple[int, ...] = (32, 64, 128)
    temporal_downsample: tuple[bool, ...] = (True, True)
    patch_size: int = 2
    blocks_per_level: int = 1
    norm_eps: float = 1e-6
    linear_shortcut: bool = False

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.temporal_downsample = tuple(bool(t) for t in self.temporal_downsample)
        if len(self.temporal_downsample) != len(self.channels) - 1:
            raise UserInputError(
                f"CompactVAEConfig: temporal_downsample needs {len(self.channels) - 1} entries "
                f"(one per level transition), got {len(self.temporal_downsample)}"
            )

    @property
    def spatial_stride(self) -> int:
        return self.patch_size * 2 ** (len(self.channels) - 1)

    @property
    def temporal_stride(self) -> int:
        return 2 ** sum(self.temporal_downsample)


class _ConvState:
    """Per-layer temporal context of one streamed video: past input frames of each causal conv
    and whether each temporal up-sampler has already emitted the video's first frame."""

    def __init__(self) -> None:
        self.past: dict[nn.Module, torch.Tensor] = {}
        self.started: set[nn.Module] = set()


def conv3d(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """`conv(x)`, through oneDNN (mkldnn) for CPU float32 inference.

    PyTorch picks its plain (im2col) kernel for 3D convs of one clip whose channels x frames x
    rows is small (<= 20480, a heuristic written for 2D convs) and for 1x1x1 kernels on one
    thread; for this VAE's streamed chunks that kernel is 1.5-4x slower than oneDNN's. The
    result is the same conv up to float32 summation order (tests hold the two together).
    """
    fast = x.is_cpu and x.dtype == torch.float32 and torch.backends.mkldnn.is_available()
    if fast and not (torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad)):
        return torch.mkldnn_convolution(x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups)
    return conv(x)


class CausalConv3d(nn.Module):
    """3D convolution, 'same' in space, causal in time (output frame t sees inputs <= t)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.time_pad = kernel_size - 1
        pad = kernel_size // 2
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, padding=(0, pad, pad))

    def forward(self, x: torch.Tensor, state: _ConvState | None = None) -> torch.Tensor:
        if self.time_pad:
            past = state.past.get(self) if state is not None else None
            if past is None:  # start of a video: pretend the first frame was always there
                past = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)
            x = torch.cat([past, x], dim=2)
            if state is not None:
                state.past[self] = x[:, :, -self.time_pad :]
        return conv3d(self.conv, x)


class ChannelRMSNorm(nn.Module):
    """RMS norm over the channels of every (frame, pixel), with a learned per-channel gain."""

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)
        return x * self.weight.view(1, -1, 1, 1, 1)


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, eps: float) -> None:
        super().__init__()
        self.norm1 = ChannelRMSNorm(in_channels, eps)
        self.conv1 = CausalConv3d(in_channels, out_channels)
        self.norm2 = ChannelRMSNorm(out_channels, eps)
        self.conv2 = CausalConv3d(out_channels, out_channels)
        self.skip = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, state: _ConvState | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), state)
        h = self.conv2(F.silu(self.norm2(h)), state)
        skip = x if isinstance(self.skip, nn.Identity) else conv3d(self.skip, x)
        return skip + h


def _space_to_depth(x: torch.Tensor, factor: int) -> torch.Tensor:
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t, h // factor, factor, w // factor, factor)
    return x.permute(0, 1, 4, 6, 2, 3, 5).reshape(b, c * factor * factor, t, h // factor, w // factor)


def _depth_to_space(x: torch.Tensor, factor: int) -> torch.Tensor:
    b, c, t, h, w = x.shape
    c_out = c // (factor * factor)
    x = x.reshape(b, c_out, factor, factor, t, h, w)
    return x.permute(0, 1, 4, 5, 2, 6, 3).reshape(b, c_out, t, h * factor, w * factor)


class Downsample(nn.Module):
    """Halve height and width (and time, first frame alone) by folding into channels + 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, temporal: bool) -> None:
        super().__init__()
        self.temporal = temporal
        fold = 4 * (2 if temporal else 1)
        self.proj = nn.Conv3d(in_channels * fold, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _space_to_depth(x, 2)
        if self.temporal:
            x = torch.cat([x[:, :, :1], x], dim=2)  # (x0, x0), (x1, x2), ...
            b, c, t, h, w = x.shape
            x = x.reshape(b, c, t // 2, 2, h, w).permute(0, 1, 3, 2, 4, 5).reshape(b, 2 * c, t // 2, h, w)
        return conv3d(self.proj, x)


class Upsample(nn.Module):
    """Inverse of `Downsample`: 1x1 conv, then unfold channels into 2x2 pixels (and 2 frames)."""

    def __init__(self, in_channels: int, out_channels: int, temporal: bool) -> None:
        super().__init__()
        self.temporal = temporal
        unfold = 4 * (2 if temporal else 1)
        self.proj = nn.Conv3d(in_channels, out_channels * unfold, 1)

    def forward(self, x: torch.Tensor, state: _ConvState | None = None) -> torch.Tensor:
        x = conv3d(self.proj, x)
        if self.temporal:
            b, c, t, h, w = x.shape
            x = x.reshape(b, 2, c // 2, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c // 2, 2 * t, h, w)
            first_of_video = state is None or self not in state.started
            if first_of_video:  # the duplicated first frame has no place in the output
                x = x[:, :, 1:]
            if state is not None:
                state.started.add(self)
        return _depth_to_space(x, 2)


def _fold_groups(x: torch.Tensor, group: int) -> torch.Tensor:
    """(B, C, g * group, h, w) -> (B, C * group, g, h, w): each run of `group` frames into channels."""
    b, c, f, h, w = x.shape
    return x.reshape(b, c, f // group, group, h, w).permute(0, 1, 3, 2, 4, 5).reshape(b, c * group, f // group, h, w)


def _unfold_groups(x: torch.Tensor, group: int) -> torch.Tensor:
    """Inverse of `_fold_groups`."""
    b, c, g, h, w = x.shape
    return x.reshape(b, c // group, group, g, h, w).permute(0, 1, 3, 2, 4, 5).reshape(b, c // group, g * group, h, w)


class LinearEncode(nn.Module):
    """The linear code's encoder: pixels -> latent means, one matrix for the first frame (alone)
    and one for each later group of `temporal_stride` frames (module doc)."""

    def __init__(self, cfg: CompactVAEConfig) -> None:
        super().__init__()
        self.stride, self.group = cfg.spatial_stride, cfg.temporal_stride
        pixels = 3 * self.stride**2
        self.first = nn.Conv3d(pixels, cfg.latent_channels, 1)
        self.rest = nn.Conv3d(pixels * self.group, cfg.latent_channels, 1)

    def fold(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels (B, 3, F, H, W) -> the first frame (B, 3 s^2, 1, h, w) and the later groups
        (B, 3 s^2 stride_t, T - 1, h, w): what the two matrices read."""
        x = _space_to_depth(video, self.stride)
        return x[:, :, :1], _fold_groups(x[:, :, 1:], self.group)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        first, rest = self.fold(video)
        if rest.shape[2] == 0:
            return conv3d(self.first, first)
        return torch.cat([conv3d(self.first, first), conv3d(self.rest, rest)], dim=2)


class LinearDecode(nn.Module):
    """The linear code's decoder: latents -> pixels, the transposed layout of `LinearEncode`."""

    def __init__(self, cfg: CompactVAEConfig) -> None:
        super().__init__()
        self.stride, self.group = cfg.spatial_stride, cfg.temporal_stride
        pixels = 3 * self.stride**2
        self.first = nn.Conv3d(cfg.latent_channels, pixels, 1)
        self.rest = nn.Conv3d(cfg.latent_channels, pixels * self.group, 1)

    def forward(self, z: torch.Tensor, state: _ConvState | None = None) -> torch.Tensor:
        parts = []
        if state is None or self not in state.started:  # z starts the video: latent 0 is frame 0
            parts.append(conv3d(self.first, z[:, :, :1]))
            z = z[:, :, 1:]
            if state is not None:
                state.started.add(self)
        if z.shape[2]:
            parts.append(_unfold_groups(conv3d(self.rest, z), self.group))
        return _depth_to_space(torch.cat(parts, dim=2), self.stride)


class Encoder(nn.Module):
    def __init__(self, cfg: CompactVAEConfig) -> None:
        super().__init__()
        ch, eps = cfg.channels, cfg.norm_eps
        self.patch_size = cfg.patch_size
        self.conv_in = CausalConv3d(3 * cfg.patch_size**2, ch[0])
        self.levels = nn.ModuleList()
        for i, width in enumerate(ch):
            level = nn.Module()
            level.blocks = nn.ModuleList(ResBlock(width, width, eps) for _ in range(cfg.blocks_per_level))
            if i + 1 < len(ch):
                level.down = Downsample(width, ch[i + 1], cfg.temporal_downsample[i])
            self.levels.append(level)
        self.mid = ResBlock(ch[-1], ch[-1], eps)
        self.norm_out = ChannelRMSNorm(ch[-1], eps)
        self.conv_out = CausalConv3d(ch[-1], 2 * cfg.latent_channels)
        self.linear = LinearEncode(cfg) if cfg.linear_shortcut else None

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(_space_to_depth(video, self.patch_size))
        for level in self.levels:
            for block in level.blocks:
                x = block(x)
            if hasattr(level, "down"):
                x = level.down(x)
        x = self.mid(x)
        out = self.conv_out(F.silu(self.norm_out(x)))
        if self.linear is None:
            return out
        mean, logvar = out.chunk(2, dim=1)
        return torch.cat([mean + self.linear(video), logvar], dim=1)


class Decoder(nn.Module):
    def __init__(self, cfg: CompactVAEConfig) -> None:
        super().__init__()
        ch, eps = cfg.channels, cfg.norm_eps
        self.patch_size = cfg.patch_size
        self.conv_in = CausalConv3d(cfg.latent_channels, ch[-1])
        self.mid = ResBlock(ch[-1], ch[-1], eps)
        # Mirror of the encoder, coarsest level first.
        self.levels = nn.ModuleList()
        for i in reversed(range(len(ch))):
            level = nn.Module()
            level.blocks = nn.ModuleList(ResBlock(ch[i], ch[i], eps) for _ in range(cfg.blocks_per_level))
            if i > 0:
                level.up = Upsample(ch[i], ch[i - 1], cfg.temporal_downsample[i - 1])
            self.levels.append(level)
        self.norm_out = ChannelRMSNorm(ch[0], eps)
        self.conv_out = CausalConv3d(ch[0], 3 * cfg.patch_size**2)
        self.linear = LinearDecode(cfg) if cfg.linear_shortcut else None

    def forward(self, z: torch.Tensor, state: _ConvState | None = None) -> torch.Tensor:
        x = self.mid(self.conv_in(z, state), state)
        for level in self.levels:
            for block in level.blocks:
                x = block(x, state)
            if hasattr(level, "up"):
                x = level.up(x, state)
        x = _depth_to_space(self.conv_out(F.silu(self.norm_out(x)), state), self.patch_size)
        return x if self.linear is None else x + self.linear(z, state)


class CompactVAE(VideoVAE):
    """Small causal video VAE (a few M parameters; default strides 4 in time, 8 in space)."""

    def __init__(self, config: CompactVAEConfig | None = None) -> None:
        super().__init__()
        self.config = config or CompactVAEConfig()
        self.temporal_stride = self.config.temporal_stride
        self.spatial_stride = self.config.spatial_stride
        self.latent_channels = self.config.latent_channels
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.register_buffer("latents_mean", torch.zeros(self.latent_channels))
        self.register_buffer("latents_std", torch.ones(self.latent_channels))

    # ---- normalisation ------------------------------------------------------------------

    def set_latent_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store per-channel statistics of raw latents (measured on training data; std > 0)."""
        assert mean.shape == std.shape == (self.latent_channels,), f"latent stats must be ({self.latent_channels},)"
        self.latents_mean.copy_(mean)
        self.latents_std.copy_(std)

    def _normalise(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latents_mean.view(1, -1, 1, 1, 1)) / self.latents_std.view(1, -1, 1, 1, 1)

    def _denormalise(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.latents_std.view(1, -1, 1, 1, 1) + self.latents_mean.view(1, -1, 1, 1, 1)

    # ---- encode / decode ----------------------------------------------------------------

    def encode_distribution(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (un-normalised) posterior mean and log-variance, each (B, C, T, h, w)."""
        self.check_video(video)
        mean, logvar = self.encoder(video).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return self._normalise(self.encode_distribution(video)[0])

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Decode raw (un-normalised) latents; what training reconstructs through."""
        self.check_latents(z)
        return self.decoder(z)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self.check_latents(latents)
        return self.decoder(self._denormalise(latents))

    def chunk_decoder(self) -> ChunkDecoder:
        return _CompactChunkDecoder(self)

    # ---- persistence --------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        """Write `config.json` + `model.safetensors` (weights and latent stats) to `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"kind": "compact", **asdict(self.config)}
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME))

    @classmethod
    def load(cls, directory: str | Path) -> CompactVAE:
        """Load a VAE written by `save`; errors name the missing / mismatched file or tensor."""
        directory = Path(directory)
        config = _read_config(directory / CONFIG_NAME)
        config.pop("kind", None)
        try:
            cfg = CompactVAEConfig(**config)
        except TypeError as err:
            raise UserInputError(f"{directory / CONFIG_NAME}: bad compact VAE config ({err})") from None
        vae = cls(cfg)
        weights = directory / WEIGHTS_NAME
        if not weights.is_file():
            raise UserInputError(f"compact VAE weights not found: {weights}")
        state = load_file(str(weights))
        _check_state(vae, state, weights)
        vae.load_state_dict(state)
        return vae.eval()


class _CompactChunkDecoder(ChunkDecoder):
    def __init__(self, vae: CompactVAE) -> None:
        self.vae = vae
        self.state = _ConvState()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self.vae.check_latents(latents)
        return self.vae.decoder(self.vae._denormalise(latents), self.state)


def _read_config(path: Path) -> dict:
    return read_json_object(path, "VAE config")


def _check_state(module: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:5])}" + (" ..." if len(unexpected) > 5 else ""))
    if wrong:
        problems.append(f"wrong shape {', '.join(wrong[:5])}" + (" ..." if len(wrong) > 5 else ""))
    if problems:
        raise UserInputError(f"{source}: weights do not fit the config: " + "; ".join(problems))

