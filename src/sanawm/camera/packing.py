"""Camera inputs of the SANA-WM transformer: a per-latent-frame raymap and chunked Plücker rays.

The video VAE compresses ``s_t`` raw frames into one latent frame (the first frame alone), so
a clip has ``F = s_t * k + 1`` frames and ``T = k + 1`` latent frames on an ``H / s_h`` by
``W / s_w`` grid. The model sees the cameras twice:

* ``raymap`` ``(T, 20)``: for latent frame i the pose of raw frame ``s_t * i`` relative to
  frame 0 (``inv(c2w[0]) @ c2w[s_t * i]``, 16 values row-major) followed by ``[fx, fy, cx, cy]``
  rescaled to the latent grid.
* ``chunk_plucker`` ``(6 * s_t, T, h, w)``: Plücker rays of the ``s_t`` raw frames behind each
  latent frame, frames ``max(0, s_t * i - s_t + 1)`` onwards (so latent frame 0 gets frames
  0..s_t-1), indices past the end repeat the last frame. Channel ``6 * j + c`` is component c of
  frame j of the chunk; the 6 components are the unit ray direction ``d`` (world frame) then
  the moment ``o x d`` (o = camera centre), all relative to frame 0.

Like the reference model, the rays are taken at the integer positions ``(x, y)`` of the latent
grid with the rescaled intrinsics (not at pixel centres): the trained weights expect exactly this.
"""

from __future__ import annotations

from typing import Any

import torch

from sanawm.camera.convention import as_c2w, as_float64, as_image_size, check_finite, pose_inverse
from sanawm.camera.image import scale_intrinsics
from sanawm.errors import UserInputError


def pack_camera(
    c2w: Any,
    intrinsics: Any,
    image_size: tuple[int, int],
    vae_stride: tuple[int, int, int] = (8, 32, 32),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Build ``(raymap, chunk_plucker)`` for a clip (see module docstring), float32 on the CPU.

    Args:
        c2w: ``(F, 4, 4)`` camera-to-world poses, or ``(B, F, 4, 4)`` for a batch;
            ``F = vae_stride[0] * k + 1``.
        intrinsics: ``[fx, fy, cx, cy]`` in pixels of ``image_size``: ``(4,)`` for all frames,
            ``(F, 4)`` per frame, or ``(B, F, 4)`` with a batch.
        image_size: ``(H, W)`` of the video in pixels, divisible by the spatial strides.
        vae_stride: the VAE's (temporal, height, width) compression factors.

    Returns:
        raymap ``([B,] T, 20)`` and chunk_plucker ``([B,] 6 * vae_stride[0], T, H / s_h, W / s_w)``.
    """
    stride_t, stride_h, stride_w = _check_stride(vae_stride)
    height, width = as_image_size(image_size)
    if height % stride_h or width % stride_w:
        raise UserInputError(
            f"image size {height}x{width} is not divisible by the VAE's spatial stride {stride_h}x{stride_w}"
        )
    poses = as_float64(c2w, "c2w")
    batched = poses.ndim == 4
    poses = as_c2w(poses, "c2w", batched=batched)
    if not batched:
        poses = poses[None]
    num_frames = poses.shape[1]
    if (num_frames - 1) % stride_t:
        raise UserInputError(
            f"c2w has {num_frames} frames; the VAE needs {stride_t}*k+1 frames "
            f"(e.g. {num_frames - (num_frames - 1) % stride_t}); see snap_frame_count"
        )
    k = _broadcast_intrinsics(intrinsics, poses.shape[:2])

    grid_h, grid_w = height // stride_h, width // stride_w
    k_latent = scale_intrinsics(k, (height, width), (grid_h, grid_w))
    rel = pose_inverse(poses[:, :1]) @ poses
    rel[:, 0] = torch.eye(4, dtype=rel.dtype)  # exact, not identity-plus-rounding

    latent_frames = torch.arange(0, num_frames, stride_t)
    raymap = torch.cat([rel[:, latent_frames].flatten(-2), k_latent[:, latent_frames]], dim=-1)

    starts = (latent_frames - (stride_t - 1)).clamp_min(0)
    chunk_frames = (starts[:, None] + torch.arange(stride_t)).clamp_max(num_frames - 1)  # (T, s_t)
    rays = plucker_rays(rel, k_latent, grid_h, grid_w)  # (B, F, h, w, 6)
    chunks = rays[:, chunk_frames]  # (B, T, s_t, h, w, 6)
    # -> (B, s_t, 6, T, h, w) so that channel 6 * j + c is component c of chunk frame j
    chunk_plucker = chunks.permute(0, 2, 5, 1, 3, 4).reshape(
        poses.shape[0], 6 * stride_t, len(latent_frames), grid_h, grid_w
    )

    raymap, chunk_plucker = raymap.float(), chunk_plucker.float()
    if not batched:
        raymap, chunk_plucker = raymap[0], chunk_plucker[0]
    return raymap, chunk_plucker


def plucker_rays(c2w: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Plücker rays ``(..., height, width, 6)`` = (unit direction, origin x direction) in world space.

    Rays go through the integer grid points ``(x, y)``, ``x in [0, width)``, ``y in [0, height)``
    of cameras ``c2w`` ``(..., 4, 4)`` with intrinsics ``(..., 4)`` on that grid.
    """
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=c2w.dtype), torch.arange(width, dtype=c2w.dtype), indexing="ij"
    )
    fx, fy, cx, cy = (intrinsics[..., i, None, None] for i in range(4))
    dirs_cam = torch.stack([(xs - cx) / fx, (ys - cy) / fy, torch.ones_like(xs - cx)], dim=-1)
    rot = c2w[..., None, None, :3, :3]
    dirs = (rot @ dirs_cam[..., None]).squeeze(-1)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = c2w[..., None, None, :3, 3].expand_as(dirs)
    return torch.cat([dirs, torch.linalg.cross(origins, dirs, dim=-1)], dim=-1)


def _check_stride(vae_stride: Any) -> tuple[int, int, int]:
    try:
        values = tuple(vae_stride)
    except TypeError:
        values = ()
    if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise UserInputError(f"vae_stride must be three positive integers (t, h, w), got {vae_stride!r}")
    return values


def _broadcast_intrinsics(intrinsics: Any, lead: torch.Size) -> torch.Tensor:
    """Intrinsics as ``(B, F, 4)`` float64 from ``(4,)``, ``(F, 4)`` or ``(B, F, 4)``."""
    k = as_float64(intrinsics, "intrinsics")
    batch, frames = lead
    allowed = [(4,), (frames, 4)] + ([(batch, frames, 4)] if batch > 1 else [(1, frames, 4)])
    if tuple(k.shape) not in allowed:
        raise UserInputError(
            f"intrinsics must be [fx, fy, cx, cy] of shape {' or '.join(map(str, allowed))}, got {tuple(k.shape)}"
        )
    check_finite(k, "intrinsics")
    if bool((k[..., :2] <= 0).any()):
        raise UserInputError("intrinsics: focal lengths fx, fy must be positive")
    return k.expand(batch, frames, 4)
