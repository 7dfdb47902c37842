"""Similarity alignment of an estimated camera trajectory onto a commanded one.

Poses estimated from a video live in an arbitrary world frame and at an arbitrary scale, so
before comparing them with the commanded trajectory we fit the similarity transform
x -> s * Q @ x + t that brings them closest:

* Q from the camera orientations (chordal L2 mean of R_cmd R_est^T). Orientations pin the
  rotation down even when the camera centres cannot: a pure rotation, or a straight walk,
  leaves Umeyama's centre-only rotation undetermined. The SANA-WM benchmark also takes the
  rotation from the orientations.
* s and t by least squares on the camera centres with Q fixed (Umeyama's scale and offset
  given the rotation). The scale is clamped at 0: a negative one would be a reflection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sanawm.errors import UserInputError
from sanawm.evaluation.geometry import nearest_rotation

# Below this total squared spread (relative to the commanded one) the estimated centres carry
# no usable scale information; the fit then uses scale 0 instead of dividing by ~0.
_DEGENERATE_SPREAD = 1e-12


@dataclass(frozen=True)
class Similarity:
    """World-frame similarity x -> scale * rotation @ x + translation."""

    rotation: np.ndarray  # (3, 3) proper rotation
    translation: np.ndarray  # (3,)
    scale: float

    def apply_to_poses(self, c2w: np.ndarray) -> np.ndarray:
        """Move camera-to-world poses (F, 4, 4): orientations rotate, centres transform fully."""
        out = np.array(c2w, dtype=np.float64, copy=True)
        out[:, :3, :3] = self.rotation @ out[:, :3, :3]
        out[:, :3, 3] = self.scale * out[:, :3, 3] @ self.rotation.T + self.translation
        return out


def align_similarity(estimated_c2w: np.ndarray, commanded_c2w: np.ndarray) -> Similarity:
    """Fit the similarity that maps `estimated_c2w` (F, 4, 4) onto `commanded_c2w` (F, 4, 4)."""
    if estimated_c2w.shape != commanded_c2w.shape:
        raise UserInputError(
            f"cannot align trajectories of different shapes: estimated {estimated_c2w.shape}, "
            f"commanded {commanded_c2w.shape}"
        )
    rotation = nearest_rotation(np.einsum("fij,fkj->ik", commanded_c2w[:, :3, :3], estimated_c2w[:, :3, :3]))

    est_centres = estimated_c2w[:, :3, 3] @ rotation.T
    cmd_centres = commanded_c2w[:, :3, 3]
    est_mean, cmd_mean = est_centres.mean(axis=0), cmd_centres.mean(axis=0)
    est_dev, cmd_dev = est_centres - est_mean, cmd_centres - cmd_mean
    spread = float((est_dev**2).sum())
    reference = max(float((cmd_dev**2).sum()), 1.0)
    scale = float((est_dev * cmd_dev).sum()) / spread if spread > _DEGENERATE_SPREAD * reference else 0.0
    scale = max(scale, 0.0)
    return Similarity(rotation=rotation, translation=cmd_mean - scale * est_mean, scale=scale)
