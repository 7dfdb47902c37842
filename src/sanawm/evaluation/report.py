"""One call that scores a generated video: `evaluate_video` -> a JSON-ready report dict.

The report holds (keys in brackets are present only when they apply):

* camera following, SANA-WM's definitions (see `camera_metrics`): "rot_err_deg",
  "trans_err_rel", "cammc_rel" (means over the evaluated frames) and their "_sum" variants;
  "camera" has the per-frame values, the evaluated frame indices and both trajectories'
  camera centres (commanded, and estimated after alignment) for plotting;
* "sharpness": a no-reference detail measure per frame (see `image_metrics.sharpness`);
* "temporal": first vs last window of sharpness (and of PSNR / SSIM against the reference);
* ["reference"]: PSNR / SSIM of every frame against a ground-truth video;
* ["revisit"]: PSNR / SSIM between frames where the commanded camera returns, when it does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sanawm.errors import UserInputError
from sanawm.evaluation.camera_metrics import camera_errors
from sanawm.evaluation.consistency import (
    RevisitConfig,
    find_revisit_pairs,
    revisit_scores,
    window_frames,
    window_trend,
)
from sanawm.evaluation.geometry import as_trajectory
from sanawm.evaluation.image_metrics import psnr, sharpness, ssim
from sanawm.evaluation.pose_estimation import PoseEstimationConfig, estimate_poses_with_backend


@dataclass(frozen=True)
class EvalConfig:
    """How `evaluate_video` scores a clip.

    pose_stride: poses are estimated on every `pose_stride`-th frame (SANA-WM's benchmark
        uses 4: neighbouring frames add little but cost time).
    pose: pose estimation settings.
    window_sec: length of the first and last windows compared for degradation (SANA-WM: 10 s;
        clips shorter than two windows use half the clip each).
    revisit: what counts as a revisit.
    """

    pose_stride: int = 4
    pose: PoseEstimationConfig = field(default_factory=PoseEstimationConfig)
    window_sec: float = 10.0
    revisit: RevisitConfig = field(default_factory=RevisitConfig)

    def __post_init__(self) -> None:
        if self.pose_stride < 1:
            raise UserInputError(f"pose stride must be at least 1, got {self.pose_stride}")
        if not self.window_sec > 0:
            raise UserInputError(f"window length must be positive, got {self.window_sec} s")


def _check_video(frames, name: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise UserInputError(f"{name}: expected uint8 RGB frames (F, H, W, 3), got {frames.dtype} {frames.shape}")
    return frames


def _floats(values) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def evaluate_video(
    frames,
    c2w,
    intrinsics,
    fps: float,
    *,
    reference=None,
    config: EvalConfig | None = None,
) -> dict:
    """Score generated `frames` (F, H, W, 3) uint8 against the commanded camera path.

    `c2w` (F, 4, 4) is the commanded trajectory and `intrinsics` (4,) or (F, 4) its
    fx, fy, cx, cy in pixels of `frames` (sanawm convention). `reference`, when given, is the
    ground-truth video (same shape) to compare every frame with.
    """
    config = config or EvalConfig()
    frames = _check_video(frames, "video")
    commanded = as_trajectory(c2w, "commanded trajectory")
    if len(commanded) != len(frames):
        raise UserInputError(f"the video has {len(frames)} frames but the trajectory has {len(commanded)} poses")
    if not fps > 0:
        raise UserInputError(f"fps must be positive, got {fps}")
    k = np.asarray(intrinsics, dtype=np.float64)
    k = np.broadcast_to(k, (len(frames), 4)) if k.shape == (4,) else k
    if k.shape != (len(frames), 4):
        raise UserInputError(f"intrinsics: expected (4,) or ({len(frames)}, 4) values, got {np.shape(intrinsics)}")

    if reference is not None:  # checked before the (slow) pose estimation
        reference = _check_video(reference, "reference video")
        if len(reference) != len(frames):
            raise UserInputError(
                f"the reference video has {len(reference)} frames but the video has {len(frames)}; "
                "a reference shows the same camera path, frame for frame"
            )
        if reference.shape != frames.shape:
            raise UserInputError(
                f"the reference video is {reference.shape[2]}x{reference.shape[1]} pixels but the video is "
                f"{frames.shape[2]}x{frames.shape[1]}"
            )

    sampled = np.arange(0, len(frames), config.pose_stride)
    if len(sampled) < 2:
        raise UserInputError(
            f"a pose stride of {config.pose_stride} leaves {len(sampled)} frame of {len(frames)}; use a smaller stride"
        )
    estimated, backend = estimate_poses_with_backend(frames[sampled], k[sampled], config.pose)
    errors = camera_errors(estimated, commanded[sampled])

    report: dict = {
        "num_frames": int(len(frames)),
        "fps": float(fps),
        "image_size": [int(frames.shape[1]), int(frames.shape[2])],
        "pose_backend": backend,
        "pose_stride": config.pose_stride,
        **errors.summary(),
        "camera": {
            "frames": sampled.tolist(),
            "rot_err_deg": _floats(errors.rot_err_deg),
            "trans_err_rel": _floats(errors.trans_err),
            "cammc_rel": _floats(errors.cammc),
            "commanded_xyz": errors.commanded_c2w[:, :3, 3].tolist(),
            "estimated_xyz": errors.aligned_c2w[:, :3, 3].tolist(),
            "alignment_scale": float(errors.alignment.scale),
        },
    }

    window = window_frames(len(frames), fps, config.window_sec)
    detail = sharpness(frames)
    report["sharpness"] = {"mean": float(detail.mean()), "per_frame": _floats(detail)}
    temporal: dict = {"window_frames": window, "window_sec": window / fps, "sharpness": window_trend(detail, window)}

    if reference is not None:
        p_values, s_values = psnr(frames, reference), ssim(frames, reference)
        report["reference"] = {
            "psnr": float(p_values.mean()),
            "ssim": float(s_values.mean()),
            "per_frame": {"psnr": _floats(p_values), "ssim": _floats(s_values)},
        }
        temporal["psnr"] = window_trend(p_values, window)
        temporal["ssim"] = window_trend(s_values, window)
    report["temporal"] = temporal

    pairs = find_revisit_pairs(commanded, fps, config.revisit)
    if pairs:
        scored = revisit_scores(frames, pairs)
        if reference is not None:  # what a perfectly consistent video scores on the same pairs
            for row, truth in zip(scored, revisit_scores(reference, pairs)):
                row["reference_psnr"], row["reference_ssim"] = truth["psnr"], truth["ssim"]
        report["revisit"] = {
            "psnr": float(np.mean([r["psnr"] for r in scored])),
            "ssim": float(np.mean([r["ssim"] for r in scored])),
            "pairs": scored,
        }
    return report


def format_table(report: dict) -> str:
    """A short human-readable summary of `evaluate_video`'s report."""
    rows = [
        ("RotErr (deg, mean)", f"{report['rot_err_deg']:.3f}"),
        ("TransErr (rel, mean)", f"{report['trans_err_rel']:.4f}"),
        ("CamMC (rel, mean)", f"{report['cammc_rel']:.4f}"),
        ("poses", f"{len(report['camera']['frames'])} frames, stride {report['pose_stride']}, {report['pose_backend']}"),
    ]
    if "reference" in report:
        rows += [
            ("PSNR vs reference (dB)", f"{report['reference']['psnr']:.2f}"),
            ("SSIM vs reference", f"{report['reference']['ssim']:.4f}"),
        ]
    if "revisit" in report:
        rows += [
            (f"revisit PSNR (dB, {len(report['revisit']['pairs'])} pairs)", f"{report['revisit']['psnr']:.2f}"),
            ("revisit SSIM", f"{report['revisit']['ssim']:.4f}"),
        ]
    temporal = report["temporal"]
    span = f"{temporal['window_sec']:.1f} s windows"
    trend = temporal["sharpness"]
    rows.append(
        (f"sharpness first -> last ({span})", f"{trend['first_window']:.1f} -> {trend['last_window']:.1f}")
    )
    if "psnr" in temporal:
        trend = temporal["psnr"]
        rows.append((f"PSNR first -> last ({span})", f"{trend['first_window']:.2f} -> {trend['last_window']:.2f}"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
