"""Procedural, view-consistent surface textures.

A texture is a function of the 3D hit point (world coordinates, or the object's rotated frame
for boxes and cylinders), never of the pixel, so a surface point has the same colour from
every camera. Each material mixes two colours by a pattern value in [0, 1]:

* ``SOLID``: colour A.
* ``CHECKER``: 3D checkerboard of cell size ``scale``.
* ``STRIPES``: bands of width ``scale`` across the direction ``axis``.
* ``BRICKS``: courses of height ``scale / 2`` (along y) and bricks ``scale`` long; colour B is mortar.
* ``NOISE``: three octaves of value noise with feature size ``scale``.

A fine value-noise grain (``grain`` amplitude) is multiplied on top of every material so that
even plain walls carry trackable detail.

Anti-aliasing: patterns are box-filtered analytically over the pixel footprint (the world-space
size of one pixel at the hit), so distant checkerboards fade to their mean instead of shimmering.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

SOLID, CHECKER, STRIPES, BRICKS, NOISE = range(5)
PATTERN_NAMES = ("solid", "checker", "stripes", "bricks", "noise")

_MORTAR = 0.08  # fraction of a brick period taken by mortar, in both directions
_GRAIN_SCALE = 0.12  # metres; feature size of the grain noise


@dataclass(frozen=True)
class Materials:
    """The material table (M entries); primitives refer to rows by index."""

    color_a: torch.Tensor  # (M, 3) float in [0, 1]
    color_b: torch.Tensor  # (M, 3)
    pattern: torch.Tensor  # (M,) long, one of SOLID..NOISE
    scale: torch.Tensor  # (M,) metres
    offset: torch.Tensor  # (M, 3) metres, shifts the pattern (varies textures, keeps cell edges off surfaces)
    axis: torch.Tensor  # (M, 3) unit vector, the stripe direction
    grain: torch.Tensor  # (M,) amplitude of the multiplicative grain noise

    @property
    def count(self) -> int:
        return int(self.pattern.shape[0])

    def to(self, device: torch.device | str) -> "Materials":
        return dataclasses.replace(
            self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)}
        )


def _filtered_square(x: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Box-filtered square wave: +1 on [0, 1), -1 on [1, 2), period 2, averaged over ``width``.

    The square wave's integral is a triangle wave, so the average over [x - w/2, x + w/2] is a
    difference of two triangle-wave values divided by w.
    """
    w = width.clamp_min(1e-4)

    def triangle(u: torch.Tensor) -> torch.Tensor:  # |fract(u / 2) - 1/2|, also for negative u
        return (torch.remainder(u, 2.0) * 0.5 - 0.5).abs()

    return (2.0 * (triangle(x - 0.5 * w) - triangle(x + 0.5 * w)) / w).clamp(-1.0, 1.0)


def _filtered_pulse(x: torch.Tensor, width: torch.Tensor, duty: float) -> torch.Tensor:
    """Box-filtered pulse train: 1 on [k, k + duty), 0 elsewhere, period 1, averaged over ``width``."""
    w = width.clamp_min(1e-4)

    def integral(u: torch.Tensor) -> torch.Tensor:
        return torch.floor(u) * duty + (u - torch.floor(u)).clamp_max(duty)

    return ((integral(x + 0.5 * w) - integral(x - 0.5 * w)) / w).clamp(0.0, 1.0)


def _hash3(ix: torch.Tensor, iy: torch.Tensor, iz: torch.Tensor) -> torch.Tensor:
    """Deterministic pseudo-random value in [0, 1] per integer lattice point (same on CPU and CUDA)."""
    h = ix * 374761393 + iy * 668265263 + iz * 1440662683  # int64 arithmetic wraps, which is fine
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFF).float() / 65535.0


def value_noise(points: torch.Tensor) -> torch.Tensor:
    """Smooth 3D value noise in [0, 1] with unit feature size: (N, 3) -> (N,)."""
    base = torch.floor(points)
    f = points - base
    f = f * f * (3.0 - 2.0 * f)  # smoothstep weights: continuous gradient across cells
    i = base.long()
    out = torch.zeros_like(points[:, 0])
    for corner in range(8):
        cx, cy, cz = corner & 1, (corner >> 1) & 1, (corner >> 2) & 1
        weight = (f[:, 0] if cx else 1 - f[:, 0]) * (f[:, 1] if cy else 1 - f[:, 1]) * (f[:, 2] if cz else 1 - f[:, 2])
        out = out + weight * _hash3(i[:, 0] + cx, i[:, 1] + cy, i[:, 2] + cz)
    return out


def _fade(noise: torch.Tensor, footprint: torch.Tensor, size: float | torch.Tensor) -> torch.Tensor:
    """Blend noise of feature ``size`` towards its mean 0.5 once a pixel covers half a feature."""
    keep = (2.0 - 4.0 * footprint / size).clamp(0.0, 1.0)
    return 0.5 + (noise - 0.5) * keep


def pattern_value(
    materials: Materials,
    material: torch.Tensor,
    points: torch.Tensor,
    normals: torch.Tensor,
    footprint: torch.Tensor,
) -> torch.Tensor:
    """Pattern value in [0, 1] for hits: material ids (N,), texture points (N, 3), normals (N, 3)
    in the same frame as the points, pixel footprints (N,) in metres."""
    scale = materials.scale[material]
    p = (points + materials.offset[material]) / scale[:, None]
    w = footprint / scale
    # Footprint along each axis: a surface does not vary along its normal, so filtering there
    # would wrongly wash the pattern out.
    w_axis = w[:, None] * torch.sqrt((1.0 - normals * normals).clamp_min(0.0)) + 1e-4
    kind = materials.pattern[material]

    checker = 0.5 - 0.5 * torch.prod(_filtered_square(p, w_axis), dim=-1)

    axis = materials.axis[material]
    along = (p * axis).sum(-1)
    w_along = w * torch.sqrt((1.0 - (normals * axis).sum(-1) ** 2).clamp_min(0.0)) + 1e-4
    stripes = 0.5 - 0.5 * _filtered_square(along, w_along)

    # Bricks: courses along y (half a brick high), bricks along x + z, alternate courses offset
    # by half a brick.
    course = p[:, 1] * 2.0
    run = p[:, 0] + p[:, 2] + 0.5 * torch.remainder(torch.floor(course), 2.0)
    w_run = torch.maximum(w_axis[:, 0], w_axis[:, 2])
    mortar_v = _filtered_pulse(course, 2.0 * w_axis[:, 1], _MORTAR * 2.0)
    mortar_u = _filtered_pulse(run, w_run, _MORTAR)
    bricks = 1.0 - (1.0 - mortar_u) * (1.0 - mortar_v)

    noise = (
        0.55 * _fade(value_noise(p), w, 1.0)
        + 0.3 * _fade(value_noise(p * 2.7 + 17.0), w, 1.0 / 2.7)
        + 0.15 * _fade(value_noise(p * 7.3 + 41.0), w, 1.0 / 7.3)
    )
    noise = ((noise - 0.5) * 2.2 + 0.5).clamp(0.0, 1.0)  # octaves average out; restore contrast

    value = torch.zeros_like(scale)
    for code, v in ((CHECKER, checker), (STRIPES, stripes), (BRICKS, bricks), (NOISE, noise)):
        value = torch.where(kind == code, v, value)
    return value


def albedo(
    materials: Materials,
    material: torch.Tensor,
    points: torch.Tensor,
    normals: torch.Tensor,
    footprint: torch.Tensor,
) -> torch.Tensor:
    """Surface colour (N, 3) in [0, 1] before lighting; arguments as in `pattern_value`."""
    value = pattern_value(materials, material, points, normals, footprint)
    color = torch.lerp(materials.color_a[material], materials.color_b[material], value[:, None])
    grain = _fade(value_noise((points + materials.offset[material]) / _GRAIN_SCALE), footprint, _GRAIN_SCALE)
    color = color * (1.0 + materials.grain[material][:, None] * (grain[:, None] - 0.5) * 2.0)
    return color.clamp(0.0, 1.0)
