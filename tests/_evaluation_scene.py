"""A tiny ray-cast renderer for the evaluation tests: a camera inside a textured box room.

Independent of `sanawm.worlds` on purpose, so the pose estimator can be checked against
poses that are exact by construction. Cameras follow sanawm's convention: OpenCV axes (x
right, y down, z forward; c2w maps camera to world) and intrinsics with the origin at the
image corner, so the centre of pixel column j is at u = j + 0.5.
"""

from __future__ import annotations

import numpy as np

ROOM_HALF_EXTENT = np.array([4.0, 2.0, 4.0])  # the room is the box [-e, e] on each axis


def _noise_texture(rng: np.random.Generator, size: int = 192) -> np.ndarray:
    """Multi-octave value noise in [0, 1], (size, size, 3), tileable enough for our use."""
    tex = np.zeros((size, size, 3))
    for cells, weight in ((8, 0.35), (24, 0.35), (64, 0.3)):
        grid = rng.random((cells + 1, cells + 1, 3))
        xs = np.linspace(0, cells, size, endpoint=False)
        i0 = xs.astype(int)
        f = (xs - i0)[:, None]
        rows = grid[i0] * (1 - f[..., None]) + grid[i0 + 1] * f[..., None]
        cols = rows[:, i0] * (1 - f[None, :, :]) + rows[:, i0 + 1] * f[None, :, :]
        tex += weight * cols
    return tex


def _sample(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear, wrapping texture lookup; u, v in texels."""
    size = tex.shape[0]
    u0 = np.floor(u).astype(int)
    v0 = np.floor(v).astype(int)
    fu = (u - u0)[..., None]
    fv = (v - v0)[..., None]
    u0 %= size
    v0 %= size
    u1 = (u0 + 1) % size
    v1 = (v0 + 1) % size
    top = tex[v0, u0] * (1 - fu) + tex[v0, u1] * fu
    bottom = tex[v1, u0] * (1 - fu) + tex[v1, u1] * fu
    return top * (1 - fv) + bottom * fv


class BoxRoom:
    """Six textured walls; `render` ray-casts one view with 2x2 supersampling."""

    def __init__(self, seed: int = 0, texels_per_unit: float = 24.0):
        rng = np.random.default_rng(seed)
        self.textures = [_noise_texture(rng) for _ in range(6)]
        self.texels_per_unit = texels_per_unit

    def render(self, c2w: np.ndarray, intrinsics, height: int, width: int) -> np.ndarray:
        fx, fy, cx, cy = intrinsics
        ss = 2
        # sub-pixel sample positions around each pixel centre j + 0.5
        offsets = (np.arange(ss) + 0.5) / ss
        us = (np.arange(width)[:, None] + offsets[None, :]).reshape(-1)
        vs = (np.arange(height)[:, None] + offsets[None, :]).reshape(-1)
        u, v = np.meshgrid(us, vs)
        dirs_cam = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], axis=-1)
        dirs = dirs_cam @ c2w[:3, :3].T
        origin = c2w[:3, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = np.where(dirs > 0, ROOM_HALF_EXTENT, -ROOM_HALF_EXTENT)
            t_axis = (bound - origin) / dirs
        t_axis = np.where(np.isfinite(t_axis) & (t_axis > 0), t_axis, np.inf)
        axis = np.argmin(t_axis, axis=-1)
        t = np.take_along_axis(t_axis, axis[..., None], axis=-1)[..., 0]
        hit = origin + dirs * t[..., None]
        positive = np.take_along_axis(dirs, axis[..., None], axis=-1)[..., 0] > 0
        wall = axis * 2 + positive
        image = np.zeros(u.shape + (3,))
        for w in range(6):
            mask = wall == w
            if not mask.any():
                continue
            a = w // 2
            other = [k for k in range(3) if k != a]
            p = hit[mask]
            image[mask] = _sample(
                self.textures[w],
                p[:, other[0]] * self.texels_per_unit,
                p[:, other[1]] * self.texels_per_unit,
            )
        image = image.reshape(height, ss, width, ss, 3).mean(axis=(1, 3))
        return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)

    def render_video(self, c2w: np.ndarray, intrinsics, height: int, width: int) -> np.ndarray:
        return np.stack([self.render(p, intrinsics, height, width) for p in c2w])


def rot_y(deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_x(deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_z(deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def pose(rotation: np.ndarray, position) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = position
    return out


def walk_and_turn(num_frames: int, step: float = 0.06, yaw_per_frame: float = 1.5) -> np.ndarray:
    """Forward walk with a steady yaw and a gentle bob: translation and rotation together."""
    poses = []
    position = np.array([0.0, 0.0, -1.5])
    yaw = 0.0
    for i in range(num_frames):
        r = rot_y(yaw) @ rot_x(3.0 * np.sin(i / 5.0))
        poses.append(pose(r, position.copy()))
        position += step * (rot_y(yaw) @ np.array([0.3, 0.0, 1.0])) / np.hypot(0.3, 1.0)
        yaw += yaw_per_frame
    return np.stack(poses)


def axis_angle_to_matrix(axis, angle_deg: float) -> np.ndarray:
    """Rodrigues' formula: rotation by `angle_deg` about the (not necessarily unit) `axis`."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    x, y, z = axis
    skew = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    angle = np.radians(angle_deg)
    return np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew
