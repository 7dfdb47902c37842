"""Per-frame image metrics in torch: PSNR, SSIM and a no-reference sharpness measure.

Frames come in the video layout (F, H, W, C) or as one (H, W, C) image, uint8 or float on the
0..`data_range` scale (255 for uint8 video), as numpy arrays or tensors. Each function returns
a float64 tensor with one value per frame. Work is done a few frames at a time so a minute of
720p video never has to sit in memory as floats.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sanawm.errors import UserInputError

PSNR_CAP_DB = 100.0  # identical frames: report this instead of infinity (SANA-WM's convention)
SSIM_WINDOW = 11  # Gaussian window of Wang et al. (2004)
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
_CHUNK = 8  # frames per batch


def _as_frames(frames, name: str) -> torch.Tensor:
    """(F, H, W, C) or (H, W, C) array/tensor -> (F, H, W, C) tensor, dtype unchanged."""
    if isinstance(frames, torch.Tensor):
        tensor = frames
    else:
        array = np.asarray(frames)
        # torch refuses to wrap read-only memory (e.g. np.broadcast_to views) without a copy
        tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
    if tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim != 4:
        raise UserInputError(f"{name}: expected frames of shape (F, H, W, C) or (H, W, C), got {tuple(tensor.shape)}")
    if tensor.shape[0] == 0:
        raise UserInputError(f"{name}: has no frames")
    return tensor


def _pair(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _as_frames(a, "first input"), _as_frames(b, "second input")
    if a.shape != b.shape:
        raise UserInputError(f"cannot compare frames of different shapes: {tuple(a.shape)} vs {tuple(b.shape)}")
    return a, b


def _chunk(frames: torch.Tensor, start: int, dtype: torch.dtype) -> torch.Tensor:
    """Frames [start, start + _CHUNK) as (n, C, H, W) in `dtype`."""
    return frames[start : start + _CHUNK].to(dtype).permute(0, 3, 1, 2)


def psnr(a, b, data_range: float = 255.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per frame, in dB, capped at `PSNR_CAP_DB`."""
    a, b = _pair(a, b)
    out = []
    for start in range(0, a.shape[0], _CHUNK):
        diff = _chunk(a, start, torch.float64) - _chunk(b, start, torch.float64)
        mse = diff.square().mean(dim=(1, 2, 3))
        value = 10.0 * torch.log10(data_range**2 / mse)
        out.append(value.clamp(max=PSNR_CAP_DB))  # mse == 0 gives +inf, clamped too
    return torch.cat(out)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 1D Gaussian taps, centred on the middle tap."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-(x**2) / (2 * sigma**2))
    return taps / taps.sum()


def _blur(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filter of (n, C, H, W), channels independent."""
    c, k = x.shape[1], taps.numel()
    x = F.conv2d(x, taps.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return F.conv2d(x, taps.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


def ssim(a, b, data_range: float = 255.0) -> torch.Tensor:
    """Structural similarity per frame (Wang et al. 2004).

    11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, statistics over the window
    positions that fit inside the image ('valid'), averaged over positions and channels.
    Computed in float32 on values scaled to [0, 1] and centred on each frame's channel means
    before the second moments are taken, so E[x^2] - E[x]^2 does not cancel catastrophically.
    """
    a, b = _pair(a, b)
    if min(a.shape[1], a.shape[2]) < SSIM_WINDOW:
        raise UserInputError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {tuple(a.shape[1:3])}")
    taps = gaussian_window().to(torch.float32)
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    out = []
    for start in range(0, a.shape[0], _CHUNK):
        x = _chunk(a, start, torch.float32) / data_range
        y = _chunk(b, start, torch.float32) / data_range
        mean_x, mean_y = x.mean(dim=(2, 3), keepdim=True), y.mean(dim=(2, 3), keepdim=True)
        x, y = x - mean_x, y - mean_y  # (co)variances are shift invariant; the means come back below
        local_x, local_y = _blur(x, taps), _blur(y, taps)
        var_x = _blur(x * x, taps) - local_x**2
        var_y = _blur(y * y, taps) - local_y**2
        cov = _blur(x * y, taps) - local_x * local_y
        mu_x, mu_y = local_x + mean_x, local_y + mean_y
        numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
        denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
        out.append((numerator / denominator).mean(dim=(1, 2, 3)).to(torch.float64))
    return torch.cat(out)


_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights


def sharpness(frames) -> torch.Tensor:
    """Variance of the 4-neighbour Laplacian of luma per frame (0..255 scale).

    A no-reference detail measure: blur and washed-out texture, the usual symptoms of a world
    model drifting over a long clip, lower it.
    """
    frames = _as_frames(frames, "frames")
    if frames.shape[-1] not in (1, 3):
        raise UserInputError(f"frames: expected 1 or 3 channels, got {frames.shape[-1]}")
    if min(frames.shape[1], frames.shape[2]) < 3:
        raise UserInputError(f"sharpness needs frames of at least 3x3 pixels, got {tuple(frames.shape[1:3])}")
    laplacian = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    out = []
    for start in range(0, frames.shape[0], _CHUNK):
        x = _chunk(frames, start, torch.float64)
        if x.shape[1] == 3:
            x = sum(w * x[:, i : i + 1] for i, w in enumerate(_LUMA))
        response = F.conv2d(x, laplacian.view(1, 1, 3, 3))
        out.append(response.flatten(1).var(dim=1, unbiased=False))
    return torch.cat(out)

