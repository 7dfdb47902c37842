"""Camera-following errors: RotErr, TransErr and CamMC, per frame and summarised.

Definitions follow the SANA-WM benchmark (`eval_benchmark_poses.py` / `pose_utils.py` in
NVlabs/Sana): both trajectories are made relative to their first frame, the estimated one is
aligned onto the commanded one with a similarity (see `alignment.py`), then per frame

* RotErr  = geodesic angle between the two camera orientations, in degrees;
* TransErr = L2 distance between the two camera centres;
* CamMC   = Frobenius norm of the difference of the two 3x4 [R | centre] c2w matrices.

SANA-WM reports the *mean* over the evaluated frames ("RotErr", "TransErr_rel", "CamMC_rel";
"rel" = relative to the first frame). CameraCtrl-style papers report the *sum*; both are
given. Translations are in the commanded trajectory's units, since the estimate's free scale
is fitted to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sanawm.errors import UserInputError
from sanawm.evaluation.alignment import Similarity, align_similarity
from sanawm.evaluation.geometry import as_trajectory, relative_to_first, rotation_angle_deg


@dataclass(frozen=True)
class CameraErrors:
    """Per-frame camera errors of an estimated trajectory against a commanded one.

    All arrays have one entry per evaluated frame; `commanded_c2w` and `aligned_c2w` are the
    two trajectories as compared (relative to frame 0, the estimate after alignment).
    """

    rot_err_deg: np.ndarray  # (N,)
    trans_err: np.ndarray  # (N,)
    cammc: np.ndarray  # (N,)
    commanded_c2w: np.ndarray  # (N, 4, 4)
    aligned_c2w: np.ndarray  # (N, 4, 4)
    alignment: Similarity | None  # None when compared without alignment

    def summary(self) -> dict[str, float]:
        """SANA-WM's per-clip numbers (means) and the CameraCtrl-style sums."""
        return {
            "rot_err_deg": float(self.rot_err_deg.mean()),
            "trans_err_rel": float(self.trans_err.mean()),
            "cammc_rel": float(self.cammc.mean()),
            "rot_err_deg_sum": float(self.rot_err_deg.sum()),
            "trans_err_rel_sum": float(self.trans_err.sum()),
            "cammc_rel_sum": float(self.cammc.sum()),
        }


def camera_errors(estimated_c2w, commanded_c2w, *, align: bool = True) -> CameraErrors:
    """Compare two (N, 4, 4) c2w trajectories frame by frame.

    `align=False` skips the similarity fit (both are still made relative to their first
    frame): useful when the estimate is already in the commanded frame and scale.
    """
    estimated = relative_to_first(as_trajectory(estimated_c2w, "estimated trajectory"))
    commanded = relative_to_first(as_trajectory(commanded_c2w, "commanded trajectory"))
    if estimated.shape != commanded.shape:
        raise UserInputError(
            f"estimated trajectory has {estimated.shape[0]} poses but the commanded one has "
            f"{commanded.shape[0]}"
        )
    alignment = align_similarity(estimated, commanded) if align else None
    aligned = alignment.apply_to_poses(estimated) if alignment is not None else estimated

    rot_err = rotation_angle_deg(commanded[:, :3, :3], aligned[:, :3, :3])
    trans_err = np.linalg.norm(commanded[:, :3, 3] - aligned[:, :3, 3], axis=-1)
    cammc = np.linalg.norm((commanded[:, :3, :4] - aligned[:, :3, :4]).reshape(len(aligned), 12), axis=-1)
    return CameraErrors(
        rot_err_deg=rot_err,
        trans_err=trans_err,
        cammc=cammc,
        commanded_c2w=commanded,
        aligned_c2w=aligned,
        alignment=alignment,
    )
