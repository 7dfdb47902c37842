"""Evaluation of world-model videos: does the camera follow the command, does the world hold?

* `evaluate_video`: everything below in one report (what `sanawm eval` prints and saves).
* Camera following: `estimate_poses` (poses from frames with known intrinsics), then
  `camera_errors` (similarity alignment + SANA-WM's RotErr / TransErr / CamMC).
* Images: `psnr`, `ssim`, `sharpness` (torch, per frame).
* Consistency: `find_revisit_pairs` / `revisit_scores`, `window_trend` (degradation).
* `plot_report`: a PNG of a report.
"""

from sanawm.evaluation.alignment import Similarity, align_similarity
from sanawm.evaluation.camera_metrics import CameraErrors, camera_errors
from sanawm.evaluation.consistency import (
    RevisitConfig,
    RevisitPair,
    find_revisit_pairs,
    revisit_scores,
    window_frames,
    window_trend,
)
from sanawm.evaluation.image_metrics import psnr, sharpness, ssim
from sanawm.evaluation.plot import plot_report
from sanawm.evaluation.pose_estimation import (
    PoseEstimationConfig,
    PoseEstimationError,
    colmap_available,
    estimate_poses,
    estimate_poses_with_backend,
)
from sanawm.evaluation.report import EvalConfig, evaluate_video, format_table

__all__ = [
    "CameraErrors",
    "EvalConfig",
    "PoseEstimationConfig",
    "PoseEstimationError",
    "RevisitConfig",
    "RevisitPair",
    "Similarity",
    "align_similarity",
    "camera_errors",
    "colmap_available",
    "estimate_poses",
    "estimate_poses_with_backend",
    "evaluate_video",
    "find_revisit_pairs",
    "format_table",
    "plot_report",
    "psnr",
    "revisit_scores",
    "sharpness",
    "ssim",
    "window_frames",
    "window_trend",
]
