"""Synthetic clips with the statistics of natural images, drawn on the training device.

The procedural worlds are the DiT's domain, but their few textures do not teach a VAE what
photographs hold (faces, fur, print, thin stripes): a VAE trained on worlds alone blurs them.
These clips add such content, cheaply enough to draw a batch every step on the GPU:

- a background of coloured 1/f^alpha noise (random phases; natural images have amplitude
  spectra close to 1/f, alpha is drawn around it), mostly luminance with weaker chroma;
- "dead leaves" (the classic model of occlusion in natural scenes): occluding ellipses and
  rotated rectangles of log-uniform sizes, largest first, each filled with a flat colour, a
  ramp, stripes of random sharpness or thresholded noise, plus some of its own noise texture;
- strokes: thin dark or light line segments of power-law lengths (print, wires, hair);
- motion: each clip is a window moving over the canvas (steady pan, zoom and roll, static
  for some clips), resampled bicubically from a canvas drawn at 2x and averaged down, so
  edges are anti-aliased like a camera's.

Everything random comes from the one `generator` passed in (on the device that draws).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LEAVES = 48
STROKES = 12
TEXTURES = 4  # noise textures per canvas shared by its leaves
SUPERSAMPLE = 2
CANVAS_MARGIN = 1.5  # canvas side / clip side: room for the window to move


def _uniform(shape, low, high, generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def fractal_noise(count: int, channels: int, height: int, width: int, alpha: torch.Tensor, generator) -> torch.Tensor:
    """(count, channels, height, width) noise with amplitude spectrum ~ 1/f^alpha (alpha: (count,)),
    zero mean and unit standard deviation per image and channel."""
    device = alpha.device
    fy = torch.fft.fftfreq(height, device=device).view(-1, 1)
    fx = torch.fft.rfftfreq(width, device=device).view(1, -1)
    f = torch.sqrt(fy.square() + fx.square()).clamp_min(1.0 / max(height, width))
    amplitude = f.pow(-alpha.view(-1, 1, 1, 1))
    amplitude[..., 0, 0] = 0.0  # no DC: the mean colour is set separately
    shape = (count, channels, height, width // 2 + 1)
    real = torch.randn(shape, generator=generator, device=device)
    imag = torch.randn(shape, generator=generator, device=device)
    noise = torch.fft.irfft2(torch.complex(real, imag) * amplitude, s=(height, width))
    noise = noise - noise.mean(dim=(2, 3), keepdim=True)
    return noise / noise.std(dim=(2, 3), keepdim=True).clamp_min(1e-8)


def _coloured(noise: torch.Tensor, generator) -> torch.Tensor:
    """3 noise channels (luminance, 2 chroma) -> RGB offsets: grey-ish luminance direction,
    random chroma directions, random contrast."""
    n, device = noise.shape[0], noise.device
    grey = torch.ones(n, 3, device=device) / math.sqrt(3)
    lum_dir = grey + 0.3 * torch.randn(n, 3, generator=generator, device=device)
    chroma_dir = torch.randn(n, 2, 3, generator=generator, device=device) * 0.4
    directions = torch.cat([lum_dir.unsqueeze(1), chroma_dir], dim=1)  # (n, 3 sources, 3 rgb)
    contrast = _uniform((n, 1, 1, 1), 0.03, 0.3, generator, device)
    return torch.einsum("nshw,nsc->nchw", noise, directions) * contrast


def _colour(n: int, generator, device) -> torch.Tensor:
    """(n, 3, 1, 1) colours: a grey level plus a chroma of random strength (photographs are mostly
    far less saturated than uniform RGB draws)."""
    grey = _uniform((n, 1, 1, 1), 0.03, 0.97, generator, device)
    chroma = torch.randn(n, 3, 1, 1, generator=generator, device=device)
    chroma = chroma * _uniform((n, 1, 1, 1), 0, 0.25, generator, device)
    return (grey + chroma).clamp(0, 1)


def _grid(height: int, width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in [0, 1] along y and x (broadcastable to (1, H, W))."""
    y = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    x = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    return y.view(1, -1, 1), x.view(1, 1, -1)


def draw_canvas(count: int, height: int, width: int, generator, device) -> torch.Tensor:
    """(count, 3, height, width) float images in [0, 1]: noise background, dead leaves, strokes."""
    n = count
    u = lambda shape, lo, hi: _uniform(shape, lo, hi, generator, device)  # noqa: E731
    y, x = _grid(height, width, device)
    aspect = width / height

    background = fractal_noise(n, 3, height, width, u((n,), 0.8, 1.8), generator)
    canvas = _colour(n, generator, device) + _coloured(background, generator)
    textures = fractal_noise(n * TEXTURES, 3, height, width, u((n * TEXTURES,), 0.6, 1.6), generator)
    textures = _coloured(textures, generator).view(n, TEXTURES, 3, height, width)

    # Radii log-uniform between r_min and r_max (fractions of the canvas height): with a few dozen
    # leaves this covers most of the canvas, at every scale.
    r_min, r_max = 0.015, 0.45
    radius = r_min * (r_max / r_min) ** u((n, LEAVES), 0, 1)
    radius = radius.sort(dim=1, descending=True).values  # large leaves first, small ones on top
    for k in range(LEAVES):
        cy, cx = u((n, 1, 1), -0.1, 1.1), u((n, 1, 1), -0.1, 1.1)
        angle = u((n, 1, 1), 0, math.pi)
        ry = radius[:, k].view(n, 1, 1)
        rx = ry * u((n, 1, 1), 0.2, 1.0)
        cos, sin = angle.cos(), angle.sin()
        dy, dx = y - cy, (x - cx) * aspect
        a, b = (dx * cos + dy * sin) / rx, (dy * cos - dx * sin) / ry
        rect = u((n, 1, 1), 0, 1) < 0.4
        inside = torch.where(rect, torch.maximum(a.abs(), b.abs()), torch.sqrt(a.square() + b.square())) <= 1.0
        # Fill: colour1 + (colour2 - colour1) * pattern, pattern one of flat / ramp / stripes / blobs.
        c1, c2 = _colour(n, generator, device), _colour(n, generator, device)
        kind = torch.randint(0, 4, (n, 1, 1), generator=generator, device=device)
        ramp = (a.clamp(-1, 1) + 1) / 2
        period = u((n, 1, 1), 0.04, 0.5) * ry.clamp_min(0.05)
        sharpness = u((n, 1, 1), 0.0, 1.0).pow(2) * 30 + 1
        stripes = (torch.tanh(sharpness * torch.sin(2 * math.pi * a * rx / period)) + 1) / 2
        texture = textures[:, k % TEXTURES]
        blobs = (torch.tanh(4 * sharpness * texture[:, 0] / 0.3) + 1) / 2
        pattern = torch.where(kind == 0, 0.0, torch.where(kind == 1, ramp, torch.where(kind == 2, stripes, blobs)))
        fill = c1 + (c2 - c1) * pattern.unsqueeze(1) + texture * u((n, 1, 1, 1), 0, 1.0)
        canvas = torch.where(inside.unsqueeze(1), fill, canvas)

    # Strokes: segments p0 -> p1, lengths density ~ l^-2, widths 0.5 .. 3 canvas pixels.
    for _ in range(STROKES):
        length = (1 / u((n, 1, 1), 1 / 0.4, 1 / 0.01)) * (u((n, 1, 1), 0, 1) < 0.7)
        angle = u((n, 1, 1), 0, 2 * math.pi)
        y0, x0 = u((n, 1, 1), 0, 1), u((n, 1, 1), 0, 1)
        ey, ex = length * angle.sin(), length * angle.cos() / aspect
        py, px = y - y0, x - x0
        t = ((py * ey + px * ex * aspect**2) / (ey.square() + (ex * aspect).square()).clamp_min(1e-12)).clamp(0, 1)
        dist = torch.sqrt((py - t * ey).square() + ((px - t * ex) * aspect).square()) * height
        half_width = u((n, 1, 1), 0.25, 1.5)
        on = (dist <= half_width) & (length > 0)
        colour = torch.where(u((n, 1, 1, 1), 0, 1) < 0.7, u((n, 3, 1, 1), 0, 0.2), u((n, 3, 1, 1), 0.8, 1))
        canvas = torch.where(on.unsqueeze(1), colour, canvas)
    return canvas.clamp(0, 1)


def synthetic_clips(count: int, frames: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """(count, frames, height, width, 3) uint8 clips (module doc), on `generator.device`."""
    device = generator.device
    ch, cw = math.ceil(height * CANVAS_MARGIN), math.ceil(width * CANVAS_MARGIN)
    canvas = draw_canvas(count, ch * SUPERSAMPLE, cw * SUPERSAMPLE, generator, device)
    canvas = F.avg_pool2d(canvas, SUPERSAMPLE)  # anti-aliased edges

    n = count
    u = lambda shape, lo, hi: _uniform(shape, lo, hi, generator, device)  # noqa: E731
    moving = (u((n, 1), 0, 1) < 0.8).float()
    t = torch.arange(frames, device=device, dtype=torch.float32).view(1, -1) - (frames - 1) / 2
    # Per frame, in output pixels / degrees: pan up to 1.5 px, zoom up to 1 %, roll up to 0.4 deg.
    shift_x = (u((n, 1), -1.5, 1.5) * moving * t + u((n, 1), -4, 4)) / (cw / 2)
    shift_y = (u((n, 1), -1.5, 1.5) * moving * t + u((n, 1), -4, 4)) / (ch / 2)
    scale = torch.exp(u((n, 1), -0.01, 0.01) * moving * t) * u((n, 1), 0.85, 1.1)
    roll = torch.deg2rad(u((n, 1), -0.4, 0.4) * moving * t)
    sx, sy = scale * width / cw, scale * height / ch
    theta = torch.stack(
        [
            torch.stack([sx * roll.cos(), -sx * roll.sin() * height / width, shift_x], dim=-1),
            torch.stack([sy * roll.sin() * width / height, sy * roll.cos(), shift_y], dim=-1),
        ],
        dim=-2,
    ).view(n * frames, 2, 3)
    grid = F.affine_grid(theta, [n * frames, 3, height, width], align_corners=False)
    source = canvas.unsqueeze(1).expand(-1, frames, -1, -1, -1).reshape(n * frames, 3, ch, cw)
    video = F.grid_sample(source, grid, mode="bicubic", padding_mode="reflection", align_corners=False)
    video = (video.clamp(0, 1) * 255).round().to(torch.uint8)
    return video.view(n, frames, 3, height, width).permute(0, 1, 3, 4, 2).contiguous()


__all__ = ["draw_canvas", "fractal_noise", "synthetic_clips"]
