"""Ray-traced rendering of procedural worlds, batched over cameras and pixels (CPU or CUDA).

Camera convention (the one in `sanawm.camera`): ``c2w`` are camera-to-world 4x4 poses with
OpenCV axes (+x right, +y down, +z forward), intrinsics ``[fx, fy, cx, cy]`` in pixels of the
rendered image, origin at the image's top-left corner, so pixel (row i, column j) is sampled
through its centre ``(j + 0.5, i + 0.5)``. One ray per pixel unless ``supersample`` > 1.

Shading: albedo from the procedural material (`sanawm.worlds.textures`) times ambient light
(with a hemisphere term) plus a Lambert directional light with optional hard shadows; distance
fog towards the horizon colour; rays that hit nothing show a sky gradient with a sun glow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sanawm.errors import UserInputError
from sanawm.worlds.scene import World
from sanawm.worlds.textures import albedo

_T_MIN = 1e-4  # metres; primary rays ignore hits closer than this
_SHADOW_BIAS = 2e-3  # metres (plus 1e-4 per metre of distance) off the surface for shadow rays
_MIN_COSINE = 0.2  # caps the footprint growth at grazing angles (over-blurring beats aliasing)
# Default ray-primitive pairs per chunk: small on CPU, where fresh multi-megabyte buffers cost
# page faults and cache misses; large on GPUs, where bigger kernels amortise launch overhead.
_CHUNK_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 25}


@dataclass
class RenderResult:
    """Per-pixel outputs of `trace`; F frames of H x W pixels, on the cameras' device.

    Attributes:
        rgb: (F, H, W, 3) float32 colours in [0, 1].
        depth: (F, H, W) float32 z-depth in metres (distance along the camera's +z axis), inf for sky.
        primitive: (F, H, W) int64 global primitive id (types in `World.primitive_sets` order,
            then index within the type), -1 for sky.
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    primitive: torch.Tensor


def _as_tensor(value: Any, name: str, device: torch.device | None) -> torch.Tensor:
    try:
        if isinstance(value, torch.Tensor):
            return value.detach().to(device=device if device is not None else value.device, dtype=torch.float32)
        return torch.as_tensor(np.asarray(value, dtype=np.float32), device=device)
    except (TypeError, ValueError) as err:
        raise UserInputError(f"{name} must be an array of numbers ({err})") from None


def _check_inputs(
    c2w: Any, intrinsics: Any, image_size: Any, device: torch.device | None
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Validate and normalise to c2w (F, 4, 4), intrinsics (F, 4) float32 on one device and (H, W)."""
    c2w = _as_tensor(c2w, "c2w", device)
    if c2w.ndim == 2:
        c2w = c2w[None]
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or c2w.shape[0] == 0:
        raise UserInputError(f"c2w must have shape (F, 4, 4) or (4, 4), got {tuple(c2w.shape)}")
    k = _as_tensor(intrinsics, "intrinsics", c2w.device)
    if k.ndim == 1:
        k = k[None]
    if k.ndim != 2 or k.shape[1] != 4 or k.shape[0] not in (1, c2w.shape[0]):
        raise UserInputError(
            f"intrinsics must have shape (4,) or ({c2w.shape[0]}, 4) = [fx, fy, cx, cy] per frame, got {tuple(k.shape)}"
        )
    if not bool(torch.isfinite(c2w).all()) or not bool(torch.isfinite(k).all()):
        raise UserInputError("c2w and intrinsics must be finite")
    if bool((k[:, :2] <= 0).any()):
        raise UserInputError(f"focal lengths fx, fy must be positive, got {k[:, :2].tolist()}")
    try:
        height, width = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise UserInputError(f"image_size must be (H, W), got {image_size!r}") from None
    if height <= 0 or width <= 0:
        raise UserInputError(f"image_size must be positive, got {(height, width)}")
    return c2w, k.expand(c2w.shape[0], 4), (height, width)


def camera_rays(
    c2w: torch.Tensor, intrinsics: torch.Tensor, image_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """World-space rays through every pixel centre.

    Args:
        c2w: (F, 4, 4) float32 poses; intrinsics: (F, 4) ``[fx, fy, cx, cy]``; image_size: (H, W).
    Returns:
        origins (F, H, W, 3), unit directions (F, H, W, 3), and the length (F, H, W) of the
        camera-space direction ``((u - cx) / fx, (v - cy) / fy, 1)``, which turns ray distance
        into z-depth (depth = t / length).
    """
    height, width = image_size
    device = c2w.device
    v = torch.arange(height, device=device, dtype=torch.float32) + 0.5
    u = torch.arange(width, device=device, dtype=torch.float32) + 0.5
    fx, fy, cx, cy = (intrinsics[:, i, None, None] for i in range(4))
    x = (u[None, None, :] - cx) / fx  # (F, 1, W)
    y = (v[None, :, None] - cy) / fy  # (F, H, 1)
    cam = torch.stack(torch.broadcast_tensors(x, y, torch.ones_like(x * y)), dim=-1)  # (F, H, W, 3)
    length = cam.norm(dim=-1)
    dirs = torch.einsum("fij,fhwj->fhwi", c2w[:, :3, :3], cam / length[..., None])
    origins = c2w[:, None, None, :3, 3].expand_as(dirs)
    return origins, dirs, length


def _first_hits(world: World, origins: torch.Tensor, dirs: torch.Tensor, t_min: float):
    """Nearest hit over all primitives: distance (R,), type number (R,), index within the type (T, R)."""
    dists, indices = [], []
    for _, prims in world.primitive_sets():
        if prims.count:
            t, index = prims.intersect(origins, dirs, t_min).min(dim=1)
        else:
            t = torch.full(origins.shape[:1], float("inf"), device=origins.device)
            index = torch.zeros(origins.shape[:1], dtype=torch.long, device=origins.device)
        dists.append(t)
        indices.append(index)
    t, kind = torch.stack(dists, dim=1).min(dim=1)
    return t, kind, torch.stack(indices)


def _any_hit(world: World, origins: torch.Tensor, dirs: torch.Tensor, t_min: float) -> torch.Tensor:
    """Whether each ray hits anything (R,) bool; cheaper than `_first_hits` (no indices)."""
    blocked = torch.zeros(origins.shape[:1], dtype=torch.bool, device=origins.device)
    for _, prims in world.primitive_sets():
        if prims.count:
            blocked |= torch.isfinite(prims.intersect(origins, dirs, t_min).amin(dim=1))
    return blocked


def _sky(world: World, dirs: torch.Tensor) -> torch.Tensor:
    light = world.lighting
    zenith = torch.tensor(light.sky_zenith, device=dirs.device)
    horizon = torch.tensor(light.sky_horizon, device=dirs.device)
    up = -dirs[:, 1:2]  # world up is -y
    sky = torch.lerp(horizon, zenith, up.clamp(0.0, 1.0) ** 0.6)
    sky = sky * (1.0 - 0.3 * (-up).clamp(0.0, 1.0))  # darker haze below the horizon
    to_light = torch.tensor(light.to_light, device=dirs.device)
    glow = ((dirs @ to_light).clamp_min(0.0) ** 256)[:, None]
    return sky + 0.6 * glow * torch.tensor(light.sun_color, device=dirs.device)


def _shade_chunk(
    world: World, casters: World, origins: torch.Tensor, dirs: torch.Tensor, pixel_angle: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Colours (R, 3), hit distances (R,) and global primitive ids (R,) for R rays."""
    t, kind, index = _first_hits(world, origins, dirs, _T_MIN)
    hit = torch.isfinite(t)
    t_safe = torch.where(hit, t, torch.zeros_like(t))
    points = origins + dirs * t_safe[:, None]

    # Per-type normals, materials and texture frames, computed for every ray and picked by the
    # hit type (masked gathers would force a device sync per type).
    normals = torch.zeros_like(points)
    tex_points = torch.zeros_like(points)
    tex_normals = torch.zeros_like(points)
    material = torch.zeros_like(kind)
    primitive = torch.full_like(kind, -1)
    first_id = 0
    for number, (_, prims) in enumerate(world.primitive_sets()):
        if prims.count:
            idx = index[number]
            mine = (kind == number) & hit
            n = prims.normals(points, idx)
            normals = torch.where(mine[:, None], n, normals)
            tex_points = torch.where(mine[:, None], prims.texture_points(points, idx), tex_points)
            tex_normals = torch.where(mine[:, None], prims.texture_points(n, idx), tex_normals)
            material = torch.where(mine, prims.material[idx], material)
            primitive = torch.where(mine, idx + first_id, primitive)
        first_id += prims.count

    cosine = (normals * dirs).sum(-1).abs().clamp_min(_MIN_COSINE)
    footprint = t_safe * pixel_angle / cosine
    color = albedo(world.materials, material, tex_points, tex_normals, footprint)

    light = world.lighting
    to_light = torch.tensor(light.to_light, device=dirs.device)
    lambert = (normals @ to_light).clamp_min(0.0)
    if light.shadows and casters.num_primitives:
        # Shadow rays only where the sun could light the surface (not for sky or faces turned
        # away): one compaction per chunk saves a large share of the second intersection pass.
        lit_side = torch.nonzero(hit & (lambert > 0)).squeeze(1)
        bias = (_SHADOW_BIAS + 1e-4 * t_safe[lit_side])[:, None]
        shadow_origins = points[lit_side] + normals[lit_side] * bias
        blocked = _any_hit(casters, shadow_origins, to_light.expand_as(shadow_origins), _T_MIN)
        lambert = lambert.index_put((lit_side,), torch.where(blocked, 0.0, lambert[lit_side]))
    hemisphere = 0.85 - 0.15 * normals[:, 1]  # up-facing (normal y < 0) surfaces get more sky light
    sun = torch.tensor(light.sun_color, device=dirs.device)
    lit = color * (light.ambient * hemisphere[:, None] + light.diffuse * lambert[:, None] * sun)

    horizon = torch.tensor(light.sky_horizon, device=dirs.device)
    keep = torch.exp(-light.fog_density * t_safe)[:, None]
    lit = lit * keep + horizon * (1.0 - keep)
    rgb = torch.where(hit[:, None], lit, _sky(world, dirs)).clamp(0.0, 1.0)
    return rgb, t, primitive


def trace(
    world: World,
    c2w: Any,
    intrinsics: Any,
    image_size: tuple[int, int],
    *,
    chunk_elements: int | None = None,
) -> RenderResult:
    """Render colour, depth and primitive ids of ``world`` seen by F cameras.

    Args:
        world: the scene (moved to the cameras' device if needed).
        c2w: (F, 4, 4) or (4, 4) camera-to-world poses (tensor, array or list).
        intrinsics: (F, 4) or (4,) ``[fx, fy, cx, cy]`` in pixels of ``image_size``.
        image_size: (H, W).
        chunk_elements: rays are processed in chunks of about this many ray-primitive pairs
            (peak memory grows with it); None picks a default for the device.
    """
    device = c2w.device if isinstance(c2w, torch.Tensor) else world.device
    c2w, k, (height, width) = _check_inputs(c2w, intrinsics, image_size, device)
    world = world.to(c2w.device)
    casters = world.shadow_casters() if world.lighting.shadows else world
    origins, dirs, length = camera_rays(c2w, k, (height, width))
    frames = c2w.shape[0]
    # World-space size of one pixel per metre of distance, for texture filtering.
    pixel_angle = (1.0 / torch.minimum(k[:, 0], k[:, 1]))[:, None, None].expand(frames, height, width)

    origins, dirs, pixel_angle = origins.reshape(-1, 3), dirs.reshape(-1, 3), pixel_angle.reshape(-1)
    if chunk_elements is None:
        chunk_elements = _CHUNK_ELEMENTS.get(c2w.device.type, _CHUNK_ELEMENTS["cuda"])
    widest = max([prims.count for _, prims in world.primitive_sets()] + [1])
    step = max(1024, chunk_elements // widest)
    outputs = [
        _shade_chunk(world, casters, origins[i : i + step], dirs[i : i + step], pixel_angle[i : i + step])
        for i in range(0, origins.shape[0], step)
    ]
    rgb, t, primitive = (torch.cat(parts) for parts in zip(*outputs))
    shape = (frames, height, width)
    return RenderResult(rgb.reshape(*shape, 3), t.reshape(shape) / length, primitive.reshape(shape))


def render(
    world: World,
    c2w: Any,
    intrinsics: Any,
    image_size: tuple[int, int],
    *,
    supersample: int = 1,
    as_uint8: bool = True,
    chunk_elements: int | None = None,
) -> torch.Tensor:
    """Render frames (F, H, W, 3): uint8, or float32 in [0, 1] with ``as_uint8=False``.

    ``supersample`` = s traces an (s H) x (s W) image with intrinsics scaled by s and averages
    s x s blocks (anti-aliases edges and fine texture; costs s^2 in time, not in memory: the
    frames are traced in groups of at most F / s^2). Other arguments as in `trace`.
    """
    if not isinstance(supersample, int) or supersample < 1:
        raise UserInputError(f"supersample must be a positive integer, got {supersample!r}")
    if supersample == 1:
        rgb = trace(world, c2w, intrinsics, image_size, chunk_elements=chunk_elements).rgb
    else:
        device = c2w.device if isinstance(c2w, torch.Tensor) else world.device
        c2w, k, (height, width) = _check_inputs(c2w, intrinsics, image_size, device)
        # With the corner-origin pixel convention, scaling an image by s scales all of K by s.
        group = max(1, c2w.shape[0] // supersample**2)  # as many rays per trace as at one ray per pixel
        parts = []
        for start in range(0, c2w.shape[0], group):
            big = trace(world, c2w[start : start + group], k[start : start + group] * supersample,
                        (height * supersample, width * supersample), chunk_elements=chunk_elements)  # fmt: skip
            parts.append(F.avg_pool2d(big.rgb.permute(0, 3, 1, 2), supersample).permute(0, 2, 3, 1))
        rgb = torch.cat(parts)
    if not as_uint8:
        return rgb
    return (rgb * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)
