"""Analytic primitives for the procedural worlds: ray intersection, normals and signed distance.

Each primitive *type* is a small dataclass of tensors holding P primitives of that type. All
math is batched: R rays against P primitives gives an (R, P) table of hit distances, so the
renderer loops only over the four types, never over individual primitives or pixels.

Conventions (world space, metres, OpenCV-style world with up = -y):

* ray directions are unit vectors; a hit distance `t` is measured along the ray; "no hit" is +inf.
* only hits with ``t > t_min`` count (``t_min`` keeps secondary rays off their own surface).
* ``sdf(points)`` is the signed distance to each primitive: positive outside (free space),
  negative inside the solid.
* ``material`` indexes the world's material table; ``casts_shadow`` says whether the primitive
  blocks the directional light (room walls and ceilings do not, or indoor scenes would be dark).

Boxes and cylinders carry a rotation whose columns are their local x, y, z axes in world
coordinates; cylinders run along their local y axis. Planes are one-sided half-space
boundaries: the normal points into free space and rays only hit them from that side.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

INF = float("inf")


@dataclass(frozen=True)
class _PrimitiveSet:
    """Shared bookkeeping: every field is a tensor whose first dimension is the primitive count P."""

    material: torch.Tensor  # (P,) long, index into the world's material table
    casts_shadow: torch.Tensor  # (P,) bool

    @property
    def count(self) -> int:
        return int(self.material.shape[0])

    def to(self, device: torch.device | str) -> "_PrimitiveSet":
        return dataclasses.replace(
            self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)}
        )

    def select(self, mask: torch.Tensor) -> "_PrimitiveSet":
        """The primitives where ``mask`` (P,) is true."""
        return dataclasses.replace(self, **{f.name: getattr(self, f.name)[mask] for f in dataclasses.fields(self)})

    def texture_points(self, points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Coordinates fed to the procedural textures: world space unless the type says otherwise."""
        return points


@dataclass(frozen=True)
class Planes(_PrimitiveSet):
    """Infinite planes ``normal . p = offset``; the normal (unit, P x 3) points into free space."""

    normal: torch.Tensor  # (P, 3)
    offset: torch.Tensor  # (P,)

    def intersect(self, origins: torch.Tensor, dirs: torch.Tensor, t_min: float) -> torch.Tensor:
        facing = dirs @ self.normal.T  # (R, P); negative when the ray heads into the solid side
        height = origins @ self.normal.T - self.offset  # signed distance of the origin to each plane
        t = -height / facing
        hit = (facing < 0) & (t > t_min)
        return torch.where(hit, t, INF)

    def normals(self, points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.normal[index]

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        return points @ self.normal.T - self.offset


@dataclass(frozen=True)
class Spheres(_PrimitiveSet):
    """Spheres: ``center`` (P, 3), ``radius`` (P,)."""

    center: torch.Tensor
    radius: torch.Tensor

    def intersect(self, origins: torch.Tensor, dirs: torch.Tensor, t_min: float) -> torch.Tensor:
        # |o + t d - c|^2 = r^2 with |d| = 1: t^2 + 2 b t + c0 = 0. Expanded into matrix
        # products so that no (R, P, 3) tensor is formed.
        b = (dirs * origins).sum(-1, keepdim=True) - dirs @ self.center.T
        c0 = (
            (origins * origins).sum(-1, keepdim=True)
            - 2.0 * origins @ self.center.T
            + (self.center * self.center).sum(-1)
            - self.radius**2
        )
        disc = b * b - c0
        root = torch.sqrt(disc.clamp_min(0.0))
        near, far = -b - root, -b + root
        t = torch.where(near > t_min, near, far)
        return torch.where((disc >= 0) & (t > t_min), t, INF)

    def normals(self, points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return (points - self.center[index]) / self.radius[index, None]

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        return torch.cdist(points, self.center) - self.radius


def _local(values: torch.Tensor, rotation: torch.Tensor, axis: int) -> torch.Tensor:
    """Component ``axis`` of (R, 3) world vectors in every primitive's local frame: (R, P)."""
    return values @ rotation[:, :, axis].T


@dataclass(frozen=True)
class _Oriented(_PrimitiveSet):
    """A primitive with a centre and a local frame (rotation columns = local axes in world)."""

    center: torch.Tensor  # (P, 3)
    rotation: torch.Tensor  # (P, 3, 3)

    def _local_rays(self, origins: torch.Tensor, dirs: torch.Tensor):
        """Ray origins and directions in every primitive's local frame: six (R, P) tensors."""
        out = []
        for axis in range(3):
            shift = (self.center * self.rotation[:, :, axis]).sum(-1)  # centre . axis, (P,)
            out.append((_local(origins, self.rotation, axis) - shift, _local(dirs, self.rotation, axis)))
        return out

    def _local_points(self, points: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Points relative to the centre in local coordinates: (N, 3) for ``index`` (N,), else (N, P, 3)."""
        if index is None:
            delta = points[:, None, :] - self.center[None]
            return torch.einsum("npi,pij->npj", delta, self.rotation)
        return torch.einsum("ni,nij->nj", points - self.center[index], self.rotation[index])

    def texture_points(self, points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        # Rotate with the object (about the world origin) so that bricks and stripes follow its faces.
        return torch.einsum("ni,nij->nj", points, self.rotation[index])


@dataclass(frozen=True)
class Boxes(_Oriented):
    """Oriented boxes: ``center`` (P, 3), ``half_size`` (P, 3) along the local axes, ``rotation`` (P, 3, 3)."""

    half_size: torch.Tensor

    def intersect(self, origins: torch.Tensor, dirs: torch.Tensor, t_min: float) -> torch.Tensor:
        # Slab method in each box's frame.
        t_near = torch.full((), -INF, device=origins.device)
        t_far = torch.full((), INF, device=origins.device)
        for axis, (o, d) in enumerate(self._local_rays(origins, dirs)):
            inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)  # parallel: +-huge, not nan
            h = self.half_size[:, axis]
            t1, t2 = (-h - o) * inv, (h - o) * inv
            t_near = torch.maximum(t_near, torch.minimum(t1, t2))
            t_far = torch.minimum(t_far, torch.maximum(t1, t2))
        t = torch.where(t_near > t_min, t_near, t_far)
        return torch.where((t_near <= t_far) & (t > t_min), t, INF)

    def normals(self, points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        q = self._local_points(points, index)
        # The face is the axis where the point is relatively farthest out.
        axis = (q.abs() / self.half_size[index]).argmax(-1)
        sign = torch.sign(q.gather(1, axis[:, None]))
        return self.rotation[index].gather(2, axis[:, None, None].expand(-1, 3, 1))[..., 0] * sign

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        q = self._local_points(points).abs() - self.half_size
        outside = q.clamp_min(0.0).norm(dim=-1)
        inside = q.amax(dim=-1).clamp_max(0.0)
        return outside + inside


@dataclass(frozen=True)
class Cylinders(_Oriented):
    """Capped cylinders along their local y axis: ``radius`` (P,), ``half_height`` (P,)."""

    radius: torch.Tensor
    half_height: torch.Tensor

    def intersect(self, origins: torch.Tensor, dirs: torch.Tensor, t_min: float) -> torch.Tensor:
        (ox, dx), (oy, dy), (oz, dz) = self._local_rays(origins, dirs)
        r, hh = self.radius, self.half_height
        # Side: (ox + t dx)^2 + (oz + t dz)^2 = r^2, accepted where |y| <= half height.
        a = (dx * dx + dz * dz).clamp_min(1e-12)
        b = ox * dx + oz * dz
        c0 = ox * ox + oz * oz - r * r
        disc = b * b - a * c0
        root = torch.sqrt(disc.clamp_min(0.0))
        near, far = (-b - root) / a, (-b + root) / a
        side = torch.full_like(near, INF)
        for t in (far, near):  # near last so that it wins when both are valid
            ok = (disc >= 0) & (t > t_min) & ((oy + t * dy).abs() <= hh)
            side = torch.where(ok, t, side)
        # Caps: the planes y = +-half height, accepted inside the radius.
        inv = 1.0 / torch.where(dy.abs() < 1e-12, torch.full_like(dy, 1e-12), dy)
        best = side
        for cap in (hh, -hh):
            t = (cap - oy) * inv
            x, z = ox + t * dx, oz + t * dz
            ok = (t > t_min) & (x * x + z * z <= r * r)
            best = torch.minimum(best, torch.where(ok, t, INF))
        return best

    def normals(self, points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        q = self._local_points(points, index)
        radial = torch.sqrt(q[:, 0] ** 2 + q[:, 2] ** 2)
        on_cap = (q[:, 1].abs() - self.half_height[index]) > (radial - self.radius[index])
        side = torch.stack([q[:, 0], torch.zeros_like(radial), q[:, 2]], -1) / radial.clamp_min(1e-9)[:, None]
        cap = torch.zeros_like(q)
        cap[:, 1] = torch.sign(q[:, 1])
        local = torch.where(on_cap[:, None], cap, side)
        return torch.einsum("nij,nj->ni", self.rotation[index], local)

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        q = self._local_points(points)
        radial = torch.sqrt(q[..., 0] ** 2 + q[..., 2] ** 2) - self.radius
        axial = q[..., 1].abs() - self.half_height
        outside = torch.sqrt(radial.clamp_min(0.0) ** 2 + axial.clamp_min(0.0) ** 2)
        inside = torch.maximum(radial, axial).clamp_max(0.0)
        return outside + inside


PRIMITIVE_TYPES = ("planes", "boxes", "spheres", "cylinders")
