"""Small rigid-motion helpers for camera trajectories (float64 numpy).

Conventions (the project's): OpenCV cameras (x right, y down, z forward) and camera-to-world
matrices `c2w` of shape (F, 4, 4); the camera centre is `c2w[:, :3, 3]` and the columns of
`c2w[:, :3, :3]` are the camera axes in world coordinates.
"""

from __future__ import annotations

import numpy as np

from sanawm.errors import UserInputError


def as_trajectory(c2w, name: str = "trajectory") -> np.ndarray:
    """Check and convert a (F, 4, 4) camera-to-world stack to float64; `name` is used in errors."""
    try:
        array = np.asarray(c2w, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise UserInputError(f"{name}: cannot read as an array of poses ({err})") from None
    if array.ndim != 3 or array.shape[1:] != (4, 4):
        raise UserInputError(f"{name}: expected camera-to-world poses of shape (F, 4, 4), got {array.shape}")
    if array.shape[0] == 0:
        raise UserInputError(f"{name}: has no poses")
    if not np.isfinite(array).all():
        raise UserInputError(f"{name}: contains NaN or infinite values")
    return array


def invert_rigid(pose: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms (..., 4, 4) using R^T rather than a general inverse."""
    rotation = pose[..., :3, :3]
    out = np.zeros_like(pose)
    out[..., :3, :3] = np.swapaxes(rotation, -1, -2)
    out[..., :3, 3] = -np.einsum("...ji,...j->...i", rotation, pose[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def relative_to_first(c2w: np.ndarray) -> np.ndarray:
    """Express every pose in the first camera's frame, so pose 0 becomes the identity."""
    return invert_rigid(c2w[0]) @ c2w


def rotation_angle_deg(rotation_a: np.ndarray, rotation_b: np.ndarray) -> np.ndarray:
    """Geodesic angle (degrees) of the rotation taking `rotation_a` to `rotation_b`, batched."""
    relative = np.swapaxes(rotation_a, -1, -2) @ rotation_b
    cos = (np.trace(relative, axis1=-2, axis2=-1) - 1.0) / 2.0
    # sin from the skew part: atan2 stays accurate near 0 and 180 degrees, where arccos does not
    skew = relative - np.swapaxes(relative, -1, -2)
    sin = np.sqrt(skew[..., 2, 1] ** 2 + skew[..., 0, 2] ** 2 + skew[..., 1, 0] ** 2) / 2.0
    return np.degrees(np.arctan2(sin, cos))


def nearest_rotation(matrix: np.ndarray) -> np.ndarray:
    """The rotation closest to `matrix` in Frobenius norm (SVD, determinant forced to +1)."""
    u, _, vt = np.linalg.svd(matrix)
    fix = np.eye(3)
    fix[2, 2] = np.sign(np.linalg.det(u @ vt)) or 1.0
    return u @ fix @ vt

