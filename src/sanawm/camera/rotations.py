"""Rotation helpers (float64): unit quaternions ``(w, x, y, z)``, SLERP and pose interpolation."""

from __future__ import annotations

import torch


def matrix_to_quaternion(rot: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(..., 3, 3)`` -> unit quaternions ``(..., 4)`` with ``w >= 0``.

    Uses whichever of w, x, y, z is largest as the pivot so that no division is ill-conditioned.
    """
    m = rot
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4*w^2, 4*x^2, 4*y^2, 4*z^2 read off the diagonal
    squares = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    pivot = squares.argmax(dim=-1, keepdim=True)
    big = 0.5 * squares.clamp_min(1e-30).sqrt()  # |w|, |x|, |y|, |z| candidates
    skew = [m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]]
    sym = [m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1]]
    # Row p: the quaternion computed with component p as pivot (other entries are 4*pivot*q_i).
    candidates = torch.stack(
        [
            torch.stack([4 * big[..., 0] ** 2, skew[0], skew[1], skew[2]], -1) / (4 * big[..., 0:1]),
            torch.stack([skew[0], 4 * big[..., 1] ** 2, sym[0], sym[1]], -1) / (4 * big[..., 1:2]),
            torch.stack([skew[1], sym[0], 4 * big[..., 2] ** 2, sym[2]], -1) / (4 * big[..., 2:3]),
            torch.stack([skew[2], sym[1], sym[2], 4 * big[..., 3] ** 2], -1) / (4 * big[..., 3:4]),
        ],
        dim=-2,
    )
    quat = torch.take_along_dim(candidates, pivot[..., None].expand(*pivot.shape, 4), dim=-2).squeeze(-2)
    quat = quat / quat.norm(dim=-1, keepdim=True)
    return torch.where(quat[..., :1] < 0, -quat, quat)


def quaternion_to_matrix(quat: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``(..., 4)`` ``(w, x, y, z)`` -> rotation matrices ``(..., 3, 3)``."""
    w, x, y, z = (quat / quat.norm(dim=-1, keepdim=True)).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*quat.shape[:-1], 3, 3)


def slerp(q0: torch.Tensor, q1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Constant-angular-speed interpolation of unit quaternions ``(..., 4)`` along the shorter arc.

    ``t`` has shape ``(...)``; ``t = 0`` gives ``q0`` and ``t = 1`` gives ``q1`` (up to sign).
    """
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)  # q and -q are the same rotation: take the short way
    dot = dot.abs().clamp_max(1.0)
    theta = torch.acos(dot)
    t = t[..., None]
    sin_theta = torch.sin(theta)
    # Nearly equal rotations: sin(theta) ~ 0, where linear interpolation is exact to rounding.
    near = sin_theta < 1e-9
    w0 = torch.where(near, 1 - t, torch.sin((1 - t) * theta) / torch.where(near, 1.0, sin_theta))
    w1 = torch.where(near, t, torch.sin(t * theta) / torch.where(near, 1.0, sin_theta))
    out = w0 * q0 + w1 * q1
    return out / out.norm(dim=-1, keepdim=True)


def interpolate_poses(c2w0: torch.Tensor, c2w1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Poses between ``c2w0`` and ``c2w1`` (``(..., 4, 4)``): SLERP on rotation, linear on position."""
    quat = slerp(matrix_to_quaternion(c2w0[..., :3, :3]), matrix_to_quaternion(c2w1[..., :3, :3]), t)
    rot = quaternion_to_matrix(quat)
    out = torch.zeros(*rot.shape[:-2], 4, 4, dtype=rot.dtype)
    out[..., :3, :3] = rot
    out[..., :3, 3] = torch.lerp(c2w0[..., :3, 3], c2w1[..., :3, 3], t[..., None])
    out[..., 3, 3] = 1.0
    return out
