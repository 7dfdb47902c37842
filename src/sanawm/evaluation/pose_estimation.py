"""Camera poses from video frames with known intrinsics.

`estimate_poses(frames, intrinsics)` returns one camera-to-world matrix per frame in the
project's OpenCV convention, the first frame at the identity. Translation scale is arbitrary
(monocular video has none): compare trajectories after a similarity alignment
(`camera_errors` does that).

Two backends:
* "opencv": a sequential structure-from-motion written on OpenCV (`_pose_opencv.py`):
  optical-flow tracks, the best-conditioned essential-matrix start, then PnP against
  triangulated points frame by frame (with local bundle adjustment) so the scale stays
  consistent along the whole clip; cameras that only turn get a rotation-only adjustment.
* "colmap": COLMAP's global structure-from-motion through `pycolmap` (optional dependency,
  `_pose_colmap.py`), with the intrinsics held fixed; a camera turning on the spot gets the
  rotations that fit its verified matches instead (the mapper trades rotation for translation).
  Where SIFT verifies few matches between consecutive frames, COLMAP maps the OpenCV
  backend's tracks instead of SIFT's matches.
"auto" uses the OpenCV backend, the more accurate of the two on ground-truth renders of the
procedural worlds at the embedded model's 128x128 (30 of 32 clips within 0.3 / 0.8 degrees
mean / max RotErr, sharp and blurred, against COLMAP's 29 and 28, benchmarks/README.md), and falls back to COLMAP when
OpenCV cannot estimate the clip and pycolmap is installed (one set of intrinsics only).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np

from sanawm.errors import UserInputError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "colmap", "opencv")


class PoseEstimationError(UserInputError):
    """The video does not support pose estimation: too few features, matches or overlap.

    A `UserInputError`: the CLI reports it as one line (exit code 2), naming the frames.
    """


@dataclass(frozen=True)
class PoseEstimationConfig:
    """Settings shared by both backends (pixel values refer to the working resolution).

    backend: "auto", "colmap" or "opencv" (see module docstring).
    max_image_side: frames larger than this are downscaled (intrinsics with them) before
        features are found; 640 px is accurate enough and several times faster than 1280.
    max_features: corners tracked (opencv) or SIFT keypoints kept (colmap) per frame.
    ransac_threshold_px: inlier threshold for the essential matrix, PnP, triangulation
        checks and bundle adjustment (Cauchy scale).
    min_matches: fewest verified correspondences accepted between consecutive frames.
    """

    backend: str = "auto"
    max_image_side: int = 640
    max_features: int = 4000
    ransac_threshold_px: float = 1.0
    min_matches: int = 20

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UserInputError(f"unknown pose backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.max_image_side < 32:
            raise UserInputError(f"max_image_side must be at least 32 pixels, got {self.max_image_side}")
        if self.max_features < 50:
            raise UserInputError(f"max_features must be at least 50, got {self.max_features}")
        if not self.ransac_threshold_px > 0:
            raise UserInputError(f"ransac_threshold_px must be positive, got {self.ransac_threshold_px}")
        if self.min_matches < 8:
            raise UserInputError(f"min_matches must be at least 8 (the essential matrix needs 5+), got {self.min_matches}")


def colmap_available() -> bool:
    """Whether the optional pycolmap backend can be used."""
    try:
        import pycolmap  # noqa: F401
    except ImportError:
        return False
    return True


def _check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise UserInputError(f"frames: expected (F, H, W, 3) video frames, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise UserInputError(f"frames: expected uint8 pixels, got {frames.dtype}")
    if frames.shape[0] < 2:
        raise UserInputError(f"frames: need at least 2 frames to estimate motion, got {frames.shape[0]}")
    if min(frames.shape[1:3]) < 32:
        raise UserInputError(f"frames: {frames.shape[2]}x{frames.shape[1]} pixels is too small for feature matching")
    return frames


def _check_intrinsics(intrinsics, num_frames: int) -> np.ndarray:
    """(4,) or (F, 4) fx, fy, cx, cy in pixels -> (F, 4) float64."""
    k = np.asarray(intrinsics, dtype=np.float64)
    if k.shape == (4,):
        k = np.broadcast_to(k, (num_frames, 4)).copy()
    if k.shape != (num_frames, 4):
        raise UserInputError(f"intrinsics: expected (4,) or ({num_frames}, 4) values fx, fy, cx, cy; got shape {k.shape}")
    if not np.isfinite(k).all() or (k[:, :2] <= 0).any():
        raise UserInputError("intrinsics: focal lengths must be positive and all values finite")
    return k


def _working_resolution(frames: np.ndarray, intrinsics: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Downscale frames (area filter) and intrinsics so the longer side is at most `max_side`."""
    height, width = frames.shape[1:3]
    factor = max_side / max(height, width)
    if factor >= 1.0:
        return frames, intrinsics
    import cv2

    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    sx, sy = size[0] / width, size[1] / height
    small = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    if small.ndim == 3:  # single-channel frames lose their channel axis in cv2.resize
        small = small[..., None]
    # with the origin at the image corner (sanawm's convention) scaling is a plain multiply
    return small, intrinsics * np.array([sx, sy, sx, sy])


def estimate_poses(frames, intrinsics, config: PoseEstimationConfig | None = None) -> np.ndarray:
    """Estimate camera-to-world poses (F, 4, 4) for uint8 `frames` (F, H, W, 3).

    `intrinsics` are fx, fy, cx, cy in pixels of `frames`, one set (4,) or one per frame
    (F, 4), in sanawm's convention (see `sanawm.camera`: origin at the image corner, so a
    centred principal point is (W/2, H/2)). The result starts at the identity; its scale is
    arbitrary. Raises `PoseEstimationError` when the frames do not carry enough matchable
    texture.
    """
    return estimate_poses_with_backend(frames, intrinsics, config)[0]


def estimate_poses_with_backend(
    frames, intrinsics, config: PoseEstimationConfig | None = None
) -> tuple[np.ndarray, str]:
    """`estimate_poses`, also returning the backend that produced the poses ("colmap"/"opencv")."""
    config = config or PoseEstimationConfig()
    frames = _check_frames(frames)
    k = _check_intrinsics(intrinsics, frames.shape[0])
    backend = config.backend
    constant_k = bool(np.allclose(k, k[0]))
    if backend == "colmap" and not colmap_available():
        raise UserInputError("pose backend 'colmap' needs pycolmap: pip install pycolmap (or use the 'opencv' backend)")
    if backend == "colmap" and not constant_k:
        raise UserInputError("pose backend 'colmap' supports one set of intrinsics for all frames; use 'opencv'")
    try:
        import cv2  # noqa: F401  (both backends resize with OpenCV; the fallback is built on it)
    except ImportError:
        raise UserInputError(
            "pose estimation needs OpenCV: pip install opencv-python-headless (or sanawm[eval])"
        ) from None

    frames, k = _working_resolution(frames, k, config.max_image_side)
    with _one_blas_thread():
        return _run_backend(backend, frames, k, config)


def _one_blas_thread():
    """Numpy's BLAS on one thread while poses are estimated: a multi-threaded solve splits
    its work by the thread count, which changes the last bits of the result (threadpoolctl,
    part of sanawm[eval]; without it the estimate is the same up to rounding)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _run_backend(
    backend: str, frames: np.ndarray, k: np.ndarray, config: PoseEstimationConfig
) -> tuple[np.ndarray, str]:
    if backend == "colmap":
        try:
            return _colmap(frames, k, config), "colmap"
        except PoseEstimationError as err:
            raise PoseEstimationError(f"{err} (the 'opencv' backend, --pose-backend opencv, may succeed)") from None
    try:
        return _opencv(frames, k, config), "opencv"
    except PoseEstimationError as err:
        if backend != "auto" or not (colmap_available() and np.allclose(k, k[0])):
            raise
        # SIFT matching across the whole clip can link frames that optical flow lost
        # (a cut, a jump), so "auto" gives COLMAP the clip before giving up
        log.warning("the OpenCV pose backend failed (%s); trying COLMAP", err)
        try:
            return _colmap(frames, k, config), "colmap"
        except PoseEstimationError as colmap_err:
            raise PoseEstimationError(f"{err} (COLMAP failed too: {colmap_err})") from None


def _colmap(frames: np.ndarray, k: np.ndarray, config: PoseEstimationConfig) -> np.ndarray:
    from sanawm.evaluation._pose_colmap import colmap_poses

    return colmap_poses(frames, k[0], config)


def _opencv(frames: np.ndarray, k: np.ndarray, config: PoseEstimationConfig) -> np.ndarray:
    from sanawm.evaluation._pose_opencv import opencv_poses

    # OpenCV puts pixel centres at integer coordinates, half a pixel left of sanawm's
    return opencv_poses(frames, k - np.array([0.0, 0.0, 0.5, 0.5]), config)
