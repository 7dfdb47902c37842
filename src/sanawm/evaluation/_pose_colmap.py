"""Pose backend on COLMAP's global structure-from-motion (`pycolmap`, optional).

Frames go to a temporary folder as PNG, enlarged to at least `_MIN_SIFT_SIDE` pixels (bicubic,
intrinsics scaled with them). SIFT features are extracted with one shared PINHOLE camera set
to the given intrinsics, matched sequentially (video order) and verified by RANSAC; COLMAP's
global mapper (GLOMAP's method: rotation averaging over all verified pairs, global
positioning of cameras and points, bundle adjustment, retriangulation) then maps them with the
intrinsics held fixed. Unlike the incremental mapper it needs no start pair with wide
parallax, which short, slowly moving video rarely has. Every frame must end up in one
reconstruction; otherwise the clip is reported as not reconstructable.

COLMAP's random generator and every stage's seed are fixed and every stage runs on one thread:
RANSAC draws the same samples in every run, whatever the thread settings.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from sanawm.evaluation.geometry import invert_rigid
from sanawm.evaluation.pose_estimation import PoseEstimationConfig, PoseEstimationError

log = logging.getLogger(__name__)

_SEED = 0
_OVERLAP = 10  # each frame is matched with this many following frames
_VERIFICATION_TRIALS = 2000  # fewest RANSAC samples per frame pair: with COLMAP's 100 the poses
# of the tests' box-room walk depend on the seed (0.285 or 0.088 deg mean RotErr, one thread);
# with 2000 every seed tried gives 0.122-0.123
_MIN_SIFT_SIDE = 256  # smaller frames are enlarged to this (integer factor) before SIFT: on the
# 128x128 ground-truth clips 2x brings the random walks within 0.3 / 0.8 deg from 3 of 5 to 4 of 5
_PEAK_THRESHOLD = 0.0005  # SIFT contrast threshold; COLMAP's 0.0067 suits photos, but finds
# 5-16 keypoints per frame on rendered 128x128 rooms (too few to match), this 150-200


def colmap_poses(frames: np.ndarray, intrinsics: np.ndarray, config: PoseEstimationConfig) -> np.ndarray:
    """Camera-to-world poses (F, 4, 4) of `frames` sharing `intrinsics` (fx, fy, cx, cy)."""
    import cv2
    import pycolmap

    pycolmap.logging.minloglevel = 3  # COLMAP narrates every step, and its errors repeat what we raise
    pycolmap.set_random_seed(_SEED)
    scale = max(1, math.ceil(_MIN_SIFT_SIDE / max(frames.shape[1:3])))
    if scale > 1:
        frames = np.stack([cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) for f in frames])
        # sanawm's pixel origin is the image corner, so the principal point scales with the pixels
        intrinsics = np.asarray(intrinsics) * scale
    names = [f"{i:06d}.png" for i in range(len(frames))]
    with tempfile.TemporaryDirectory(prefix="sanawm-colmap-") as tmp:
        root = Path(tmp)
        images, output = root / "images", root / "sparse"
        images.mkdir()
        output.mkdir()
        for name, frame in zip(names, frames):
            Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame).save(images / name)
        database = root / "database.db"

        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = "PINHOLE"
        # COLMAP, like sanawm, puts the pixel origin at the image corner
        reader.camera_params = ",".join(f"{v:.6f}" for v in intrinsics)
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.use_gpu = False
        extraction.num_threads = 1
        extraction.sift.max_num_features = config.max_features
        extraction.sift.peak_threshold = _PEAK_THRESHOLD
        pycolmap.extract_features(
            database, images, image_names=names, camera_mode=pycolmap.CameraMode.SINGLE,
            reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu,
        )
        matching = pycolmap.FeatureMatchingOptions()
        matching.use_gpu = False
        matching.num_threads = 1
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = _OVERLAP
        verification = pycolmap.TwoViewGeometryOptions()
        verification.min_num_inliers = config.min_matches
        verification.ransac.min_num_trials = _VERIFICATION_TRIALS
        verification.ransac.max_error = max(config.ransac_threshold_px, 1.0) * 2.0
        # a slow camera leaves many features in place from frame to frame, which the watermark
        # test (matches that do not move near the border) would throw away as an overlay
        verification.detect_watermark = False
        pycolmap.match_sequential(
            database, matching_options=matching, pairing_options=pairing,
            verification_options=verification, device=pycolmap.Device.cpu,
        )
        reconstructions = pycolmap.global_mapping(database, images, output, _mapper_options(pycolmap, config))

    if not reconstructions:
        raise PoseEstimationError("COLMAP could not reconstruct the clip (too few verified frame pairs)")
    best = max(reconstructions.values(), key=lambda r: r.num_reg_images())
    w2c = {}
    for image in best.images.values():
        if image.has_pose:
            w2c[image.name] = np.asarray(image.cam_from_world().matrix(), dtype=np.float64)
    missing = [i for i, name in enumerate(names) if name not in w2c]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise PoseEstimationError(
            f"COLMAP registered {len(w2c)} of {len(names)} frames; missing frames {shown}"
        )
    stack = np.zeros((len(names), 4, 4))
    stack[:, 3, 3] = 1.0
    stack[:, :3, :] = np.stack([w2c[name] for name in names])
    if not np.isfinite(stack).all():
        raise PoseEstimationError("COLMAP returned non-finite poses for the clip")
    c2w = invert_rigid(stack)
    return invert_rigid(c2w[0]) @ c2w


def _mapper_options(pycolmap, config: PoseEstimationConfig):
    """Global mapper settings: intrinsics fixed, one model, one thread, CPU, every seed fixed."""
    options = pycolmap.GlobalPipelineOptions()
    options.min_num_matches = config.min_matches
    options.multiple_models = False
    options.num_threads = 1
    options.random_seed = _SEED
    mapper = options.mapper
    mapper.num_threads = 1
    mapper.random_seed = _SEED
    mapper.rotation_averaging.random_seed = _SEED
    mapper.global_positioning.random_seed = _SEED
    mapper.global_positioning.use_gpu = False
    mapper.retriangulation.random_seed = _SEED
    # keep points seen from rays at any angle (COLMAP drops those under 1 deg): their depth is
    # poor, but distant points are what pins the rotations down, and a camera turning on the
    # spot has no others (2 of the 8 ground-truth turns within 0.3 / 0.8 deg instead of 0; 19 and
    # 19 of 32 clips sharp and blurred instead of 18 and 16)
    mapper.min_tri_angle_deg = 0.0
    adjustment = mapper.bundle_adjustment
    adjustment.refine_focal_length = False
    adjustment.refine_principal_point = False
    adjustment.refine_extra_params = False
    adjustment.ceres.use_gpu = False
    adjustment.ceres.solver_options.num_threads = 1
    return options
