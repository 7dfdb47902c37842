"""Pose backend on COLMAP's incremental structure-from-motion (`pycolmap`, optional).

Frames go to a temporary folder as PNG; SIFT features are extracted with one shared PINHOLE
camera set to the given intrinsics, matched sequentially (video order), and mapped with the
intrinsics held fixed. Every frame must end up in one reconstruction; otherwise the clip is
reported as not reconstructable. COLMAP's random generator is seeded and every stage runs on
one thread: RANSAC draws the same samples in every run, whatever the thread settings.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from sanawm.evaluation.geometry import invert_rigid
from sanawm.evaluation.pose_estimation import PoseEstimationConfig, PoseEstimationError

log = logging.getLogger(__name__)

_OVERLAP = 10  # each frame is matched with this many following frames
_VERIFICATION_TRIALS = 2000  # fewest RANSAC samples per frame pair: with COLMAP's 100 the poses
# of the tests' box-room walk depend on the seed (0.285 or 0.088 deg mean RotErr, one thread);
# with 2000 every seed tried gives 0.122-0.123


def colmap_poses(frames: np.ndarray, intrinsics: np.ndarray, config: PoseEstimationConfig) -> np.ndarray:
    """Camera-to-world poses (F, 4, 4) of `frames` sharing `intrinsics` (fx, fy, cx, cy)."""
    import pycolmap

    pycolmap.logging.minloglevel = 3  # COLMAP narrates every step, and its errors repeat what we raise
    pycolmap.set_random_seed(0)
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
        reader.camera_params = ",".join(f"{v:.6f}" for v in intrinsics)
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.use_gpu = False
        extraction.num_threads = 1
        extraction.sift.max_num_features = config.max_features
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
        pycolmap.match_sequential(
            database, matching_options=matching, pairing_options=pairing,
            verification_options=verification, device=pycolmap.Device.cpu,
        )

        options = pycolmap.IncrementalPipelineOptions()
        options.ba_refine_focal_length = False
        options.ba_refine_principal_point = False
        options.ba_refine_extra_params = False
        options.mapper.abs_pose_refine_focal_length = False
        options.mapper.abs_pose_refine_extra_params = False
        options.min_num_matches = config.min_matches
        options.multiple_models = False
        options.num_threads = 1
        options.random_seed = 0
        # videos move slowly: accept initial pairs with less parallax than photo collections
        options.mapper.init_min_tri_angle = 4.0
        options.mapper.init_min_num_inliers = max(config.min_matches, 30)
        reconstructions = pycolmap.incremental_mapping(database, images, output, options)

    if not reconstructions:
        raise PoseEstimationError("COLMAP could not reconstruct the clip (no initial frame pair with enough parallax and matches)")
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
    c2w = invert_rigid(stack)
    return invert_rigid(c2w[0]) @ c2w
