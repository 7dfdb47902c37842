"""Camera conditioning of the attention layers (UCPE: per-ray projective transforms).

Every token gets a local "ray frame": z along its viewing ray (pinhole unprojection of its
latent pixel), x = normalise(camera_y x z), y = z x x, origin at the camera centre. `P` maps
world to that ray frame. Each camera-branch head of width D is split in half:
- the first D/2 channels are 4-vectors (groups of 4) multiplied by P^T (queries),
  P^-1 (keys, values) and P (outputs), so q.k depends on the relative transform between rays;
- the second D/2 channels get a 3D RoPE (inverse RoPE on outputs).

The raymap row of a latent frame is its 4x4 camera-to-world (row-major, relative to frame 0)
followed by fx, fy, cx, cy in latent-grid pixels.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from sanawm.model.rope import Rotation, apply_rope


class CameraTransforms(NamedTuple):
    """Per-token transforms of one call, shared by all blocks."""

    p: Tensor
    """(B, N, 4, 4) world -> ray frame."""
    p_inv: Tensor
    """(B, N, 4, 4) ray frame -> world."""
    rope: Rotation
    """(N, D/4) RoPE of the second half of a camera head."""
    rope_f32: tuple[Tensor, Tensor]
    """`rope`'s cos and sin in float32, as `sanawm.ops.ucpe` takes them (converted once per
    call rather than in each of the blocks' transforms)."""


def ray_frames(raymap: Tensor, height: int, width: int) -> Tensor:
    """World -> ray-frame transforms (B, T, height, width, 4, 4) from a raymap (B, T, 20)."""
    B, T, _ = raymap.shape
    c2w = raymap[..., :16].reshape(B, T, 4, 4)
    fx, fy, cx, cy = (raymap[..., 16 + i, None, None] for i in range(4))  # (B, T, 1, 1)
    v, u = torch.meshgrid(
        torch.arange(height, dtype=raymap.dtype, device=raymap.device),
        torch.arange(width, dtype=raymap.dtype, device=raymap.device),
        indexing="ij",
    )
    x = (u - cx) / fx
    y = (v - cy) / fy
    d_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # (B, T, H, W, 3), +y points down
    rot = c2w[..., :3, :3]
    d_world = torch.einsum("btij,bthwj->bthwi", rot, d_cam)
    cam_y = rot[..., :, 1][:, :, None, None, :].expand_as(d_world)
    z_ray = F.normalize(d_world, dim=-1, eps=1e-6)
    x_ray = F.normalize(torch.cross(cam_y, z_ray, dim=-1), dim=-1, eps=1e-6)
    y_ray = F.normalize(torch.cross(z_ray, x_ray, dim=-1), dim=-1, eps=1e-6)
    world_to_ray = torch.stack([x_ray, y_ray, z_ray], dim=-2)  # rows: the ray frame's axes
    origin = c2w[..., :3, 3][:, :, None, None, :]
    out = torch.zeros(B, T, height, width, 4, 4, dtype=raymap.dtype, device=raymap.device)
    out[..., :3, :3] = world_to_ray
    out[..., :3, 3] = -torch.einsum("bthwij,bthwj->bthwi", world_to_ray, origin.expand_as(d_world))
    out[..., 3, 3] = 1.0
    return out


def camera_transforms(p: Tensor, rope: Rotation) -> CameraTransforms:
    """The transforms of one call from the world -> ray-frame matrices p (B, N, 4, 4) and the
    camera heads' RoPE (the inverse and the float32 tables derived here, once)."""
    return CameraTransforms(p, invert_rigid(p), rope, (rope.cos.float(), rope.sin.float()))


def invert_rigid(m: Tensor) -> Tensor:
    """Inverse of rigid 4x4 transforms [R t; 0 1] -> [R^T -R^T t; 0 1]."""
    rot_t = m[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(m)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ m[..., :3, 3:])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def _apply_4x4(x: Tensor, m: Tensor) -> Tensor:
    """x (B, H, N, G*4) with each group of 4 replaced by m[b, n] @ group (float32 or better).

    On the CPU (eager) one batched matmul (`apply_4x4_matmul`); on the GPU and under
    torch.compile the 16 multiply-adds written out (`apply_4x4_pointwise`): inductor fuses
    those into the element-wise kernels around them, whereas the matmul form is an extern
    batched GEMM of 4x4 tiles with transposing float32 copies of x on either side."""
    if x.is_cpu and not torch.compiler.is_compiling():
        return apply_4x4_matmul(x, m)
    return apply_4x4_pointwise(x, m)


def apply_4x4_matmul(x: Tensor, m: Tensor) -> Tensor:
    """`_apply_4x4` as one einsum (the reference form)."""
    work = torch.promote_types(x.dtype, torch.float32)
    groups = x.to(work).unflatten(-1, (-1, 4))
    out = torch.einsum("bnij,bhngj->bhngi", m.to(work), groups)
    return out.flatten(-2).to(x.dtype)


def apply_4x4_pointwise(x: Tensor, m: Tensor) -> Tensor:
    """`_apply_4x4` as element-wise products and sums (no matmul, no copies of x)."""
    work = torch.promote_types(x.dtype, torch.float32)
    cols = x.to(work).unflatten(-1, (-1, 4)).unbind(-1)  # 4 x (B, H, N, G)
    mw = m.to(work)[:, None, :, None]  # (B, 1, N, 1, 4, 4)
    rows = [mw[..., i, 0] * cols[0] + mw[..., i, 1] * cols[1] + mw[..., i, 2] * cols[2] + mw[..., i, 3] * cols[3]
            for i in range(4)]  # fmt: skip
    return torch.stack(rows, dim=-1).flatten(-2).to(x.dtype)


def split_apply(x: Tensor, m: Tensor, rope: Rotation, inverse_rope: bool) -> Tensor:
    """x (B, H, N, D): the first half's groups of 4 channels multiplied by m (B, N, 4, 4), the
    second half rotated by `rope` (inverse with `inverse_rope`)."""
    half = x.shape[-1] // 2
    return torch.cat([_apply_4x4(x[..., :half], m), apply_rope(x[..., half:], rope, inverse=inverse_rope)], dim=-1)


def transform_queries(q: Tensor, cam: CameraTransforms) -> Tensor:
    """q (B, H, N, D) -> camera-branch queries."""
    return split_apply(q, cam.p.transpose(-1, -2), cam.rope, inverse_rope=False)


def transform_keys(k: Tensor, cam: CameraTransforms) -> Tensor:
    """k or v (B, H, N, D) -> camera-branch keys / values."""
    return split_apply(k, cam.p_inv, cam.rope, inverse_rope=False)


def transform_outputs(o: Tensor, cam: CameraTransforms) -> Tensor:
    """Attention output (B, H, N, D) -> back to the token frame."""
    return split_apply(o, cam.p, cam.rope, inverse_rope=True)


def rms_clamp_scale(ss_x: Tensor, ss_ref: Tensor, width: int, eps: float = 1e-6) -> Tensor:
    """The factor (..., N) `rms_clamp` scales each vector of x by, from the sums of squares over
    the `width` channels of x and of ref (computed beside them by `sanawm.ops.ucpe`)."""
    ref_rms = (ss_ref / width + eps).sqrt()
    x_rms = (ss_x / width + eps).sqrt()
    return (ref_rms / x_rms.clamp_min(eps)).clamp(max=1.0)


def rms_clamp_from_sums(x: Tensor, ss_x: Tensor, ss_ref: Tensor, eps: float = 1e-6) -> Tensor:
    """`rms_clamp` of x (..., N, D) from the sums of squares of x and ref (`rms_clamp_scale`)."""
    return x * rms_clamp_scale(ss_x, ss_ref, x.shape[-1], eps)[..., None].to(x.dtype)


def rms_clamp(x: Tensor, ref: Tensor, eps: float = 1e-6) -> Tensor:
    """Scale each (.., token) vector of x (..., N, D) down so its RMS over D (plus eps) does
    not exceed that of ref; the camera transforms' translations can inflate it."""
    ref_rms = (ref.square().mean(dim=-1, keepdim=True) + eps).sqrt()
    x_rms = (x.square().mean(dim=-1, keepdim=True) + eps).sqrt()
    return x * (ref_rms / x_rms.clamp_min(eps)).clamp(max=1.0)


__all__ = [
    "CameraTransforms",
    "camera_transforms",
    "ray_frames",
    "invert_rigid",
    "transform_queries",
    "transform_keys",
    "transform_outputs",
    "rms_clamp",
    "rms_clamp_from_sums",
    "rms_clamp_scale",
    "split_apply",
    "apply_4x4_matmul",
    "apply_4x4_pointwise",
]
