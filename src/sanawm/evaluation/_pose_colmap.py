"""Pose backend on COLMAP's global structure-from-motion (`pycolmap`, optional).

Frames go to a temporary folder as PNG, enlarged to at least `_MIN_SIFT_SIDE` pixels (bicubic,
intrinsics scaled with them). SIFT features are extracted with one shared PINHOLE camera set
to the given intrinsics, matched sequentially (video order) and verified by RANSAC; COLMAP's
global mapper (GLOMAP's method: rotation averaging over all verified pairs, global
positioning of cameras and points, bundle adjustment, retriangulation) then maps them with the
intrinsics held fixed. Unlike the incremental mapper it needs no start pair with wide
parallax, which short, slowly moving video rarely has. Every frame must end up in one
reconstruction; otherwise the clip is reported as not reconstructable. A camera turning on the
spot (most verified pairs explained by a rotation alone) skips the mapper: its rotations come
from a rotation-only adjustment over the verified matches (`_pure_turn`).

When SIFT verifies few matches between consecutive frames (`_FEW_MATCHES`: grass, sky and soft
hills at 128x128), SIFT's map is kept only if its points live long (`_SIFT_MIN_TRACK_LENGTH`
frames on average) and the clip is no turn on the spot; otherwise the backend writes the OpenCV
backend's Lucas-Kanade tracks (`_pose_opencv.opencv_tracks`, corners followed frame to frame and
checked against an essential matrix or a pure turn) into COLMAP's database as keypoints and
matches, and COLMAP verifies and maps those instead. The verification, the pure-turn test, the
global mapper and its bundle adjustment are COLMAP's either way; the features are not.

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
_TURN_FIT_PX = 2.0  # a clip is taken for a pure turn when 90% of its verified matches lie within
# this distance (pixels of the enlarged frames) of their rotation-only fit. Measured on the
# ground-truth clips of scripts/eval_poses.py: 0.72-1.74 on the 8 pure turns and the walks 03, 07
# and 18, whose translation is too small to see (their rotations then come out 0.02-0.09 deg mean
# RotErr); 2.19-3.94 on the walks tried that translate visibly (11, read as a turn, would be 1.6 deg
# off). COLMAP's own "panoramic" label does not tell them apart: 61-79% of the pairs of the walks
# 11 and 15 carry it, 13% of the pitch turn 09's
_MAX_H_INLIER_RATIO = 1.0  # a verified pair counts as planar or panoramic only when a homography
# explains more of its matches than the essential matrix does (COLMAP: 0.8). At 128x128 slow walks
# over grass or through rooms fit homographies almost as well as essential matrices (191 of the
# 274 verified pairs of the terrain walk 31 of scripts/eval_poses.py with tracks, below), and the
# global mapper's relative poses of such pairs over-read the turn (rotation read 1.35x). On the
# 32 sharp clips: the room walks 15 and 19 within 0.3 / 0.8 deg (0.12 / 0.28 and 0.14 / 0.72,
# were 0.20 / 1.62 and 0.20 / 0.81)
_FEW_MATCHES = 120  # median verified SIFT matches between consecutive frames below which the
# OpenCV backend's Lucas-Kanade tracks may replace SIFT's matches. Grass, sky and soft hills at
# 128x128 give SIFT few distinctive points, and on renders of one ray per pixel wrong matches
# survive verification: the terrain clips 14, 23, 27 and 31 (95-114 matches; rooms, corridors and
# streets 170-420, the terrain clips that SIFT maps well 128-183) came out 4.5-11.7 deg mean
# RotErr, with the tracks 0.13-0.37 deg but for 27. Blurred to the embedded model's sharpness,
# 21 of those 32 clips fall under it (benchmarks/README.md)
_SIFT_MIN_TRACK_LENGTH = 11.0  # under _FEW_MATCHES, SIFT's map is kept when its 3D points are seen
# in at least this many frames on average, or a third of a shorter clip's frames (no point outlives
# the clip; measured on clips of 33 frames). Texture finer than the pixels (one ray per pixel)
# re-matches differently from frame to frame, and SIFT's points break into short tracks: its
# maps that miss by 3-12 deg mean RotErr on the terrain clips of scripts/eval_poses.py average
# 2.5-8.5 frames per point, where its maps of the other clips under _FEW_MATCHES average 12.0-17.4
# and read 0.06-0.18 deg, better than the tracks' maps of the same clips (0.05-0.44): on the
# anti-aliased blurred terrain walk 27 SIFT reads 0.176 / 0.389 deg (13.8 frames per point), the
# tracks 0.425 / 1.065 (benchmarks/README.md)
_ROTATION_SIGMA_DEG = 2.0  # scale of rotation averaging's robust loss (Geman-McClure; COLMAP: 5).
# A slow walk's frame pairs with little parallax can decompose into a wrong relative pose that trades
# rotation for translation: on the anti-aliased terrain walk 23 of scripts/eval_poses.py at least 19
# of the 135 verified SIFT pairs, their essential matrices decomposed (OpenCV), are 1.6-27 deg off
# in relative rotation against the true cameras, while most agree to a fraction of a degree; at 5
# deg those pairs still pull and the clip came out 5.67 / 14.63 deg mean / max RotErr, at 2 deg
# (or 1, 0.5) they count as outliers and it reads 0.10 / 0.21. At 1 deg the one-ray street walk 08,
# blurred, went from 0.076 / 0.120 to 0.126 / 0.675; at 2 deg it reads 0.075 / 0.131
_PEAK_THRESHOLD = 0.0005  # SIFT contrast threshold; COLMAP's 0.0067 suits photos, but finds
# 5-16 keypoints per frame on rendered 128x128 rooms (too few to match), this 150-200


def colmap_poses(frames: np.ndarray, intrinsics: np.ndarray, config: PoseEstimationConfig) -> np.ndarray:
    """Camera-to-world poses (F, 4, 4) of `frames` sharing `intrinsics` (fx, fy, cx, cy)."""
    import cv2
    import pycolmap

    pycolmap.logging.minloglevel = 3  # COLMAP narrates every step, and its errors repeat what we raise
    pycolmap.set_random_seed(_SEED)
    original, original_k = frames, np.asarray(intrinsics)  # the OpenCV tracker works on these
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
        verification.max_H_inlier_ratio = _MAX_H_INLIER_RATIO
        pycolmap.match_sequential(
            database, matching_options=matching, pairing_options=pairing,
            verification_options=verification, device=pycolmap.Device.cpu,
        )
        turn = _pure_turn(pycolmap, database, names, intrinsics, config)
        if turn is not None:
            return turn
        few = _median_consecutive_matches(pycolmap, database, names) < _FEW_MATCHES
        tracks = _opencv_tracks(original, original_k, config) if few else None
        if tracks is None:
            return _poses(_largest(_global_mapping(pycolmap, database, images, output / "sift", config)), names)
        # SIFT's map first (the tracks replace its matches in the database), then the tracks':
        # a turn on the spot, which the tracks may show where SIFT's scattered matches did not,
        # wins over both maps
        try:
            sift = _largest(_global_mapping(pycolmap, database, images, output / "sift", config))
            sift_poses = _poses(sift, names)
        except PoseEstimationError:
            sift = sift_poses = None
        _import_tracks(pycolmap, database, root / "pairs.txt", names, tracks, scale, verification, config)
        turn = _pure_turn(pycolmap, database, names, intrinsics, config)
        if turn is not None:
            return turn
        if sift_poses is not None and _points_live_long(sift, len(names)):
            return sift_poses
        return _poses(_largest(_global_mapping(pycolmap, database, images, output / "tracks", config)), names)


def _global_mapping(pycolmap, database: Path, images: Path, output: Path, config: PoseEstimationConfig) -> dict:
    """COLMAP's global mapper on the database's verified matches, into `output`."""
    output.mkdir()
    return pycolmap.global_mapping(database, images, output, _mapper_options(pycolmap, config))


def _points_live_long(reconstruction, frames: int) -> bool:
    """Whether the reconstruction's points are seen in `_SIFT_MIN_TRACK_LENGTH` frames on
    average, or in a third of a shorter clip's `frames`."""
    return reconstruction.compute_mean_track_length() >= min(_SIFT_MIN_TRACK_LENGTH, frames / 3)


def _largest(reconstructions: dict):
    """The reconstruction with the most registered frames."""
    if not reconstructions:
        raise PoseEstimationError("COLMAP could not reconstruct the clip (too few verified frame pairs)")
    return max(reconstructions.values(), key=lambda r: r.num_reg_images())


def _poses(reconstruction, names: list[str]) -> np.ndarray:
    """Camera-to-world poses (F, 4, 4) of the frames `names` in `reconstruction`, relative to the
    first frame."""
    w2c = {}
    for image in reconstruction.images.values():
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


def _median_consecutive_matches(pycolmap, database, names: list[str]) -> float:
    """Median count of verified matches between consecutive frames (0 for an unverified pair)."""
    db = pycolmap.Database.open(database)
    try:
        image_id = {image.name: image.image_id for image in db.read_all_images()}
        counts = []
        for a, b in zip(names[:-1], names[1:]):
            pair = image_id[a], image_id[b]
            verified = db.exists_two_view_geometry(*pair)
            counts.append(len(db.read_two_view_geometry(*pair).inlier_matches) if verified else 0)
    finally:
        db.close()
    return float(np.median(counts))


def _opencv_tracks(frames: np.ndarray, intrinsics: np.ndarray, config: PoseEstimationConfig):
    """The OpenCV backend's verified tracks of `frames` (see `opencv_tracks`), keypoints in
    COLMAP's pixel convention (origin at the image corner), or None when they cannot be
    followed through the clip (a cut, a flash: SIFT may still match across it)."""
    from sanawm.evaluation._pose_opencv import opencv_tracks

    # OpenCV puts pixel centres at integer coordinates, half a pixel left of sanawm's and COLMAP's
    shift = np.array([0.0, 0.0, 0.5, 0.5])
    try:
        keypoints, track_ids = opencv_tracks(frames, np.broadcast_to(intrinsics - shift, (len(frames), 4)), config)
    except PoseEstimationError as err:
        log.info("keeping COLMAP's SIFT matches: the frames cannot be tracked (%s)", err)
        return None
    return [k + 0.5 for k in keypoints], track_ids


def _import_tracks(pycolmap, database, pairs_path: Path, names, tracks, scale: int, verification, config) -> None:
    """Replace the database's SIFT keypoints and matches by `tracks` (keypoints per frame, in
    pixels of the frames before enlargement, and their track ids): every two frames at most
    `_OVERLAP` apart are matched by the tracks they share, and COLMAP verifies those matches
    as it verifies its own."""
    keypoints, track_ids = tracks
    db = pycolmap.Database.open(database)
    pairs = []
    try:
        image_id = {image.name: image.image_id for image in db.read_all_images()}
        db.clear_two_view_geometries()
        db.clear_matches()
        db.clear_descriptors()
        db.clear_keypoints()
        for name, points in zip(names, keypoints):
            db.write_keypoints(image_id[name], (points * scale).astype(np.float32))
        for a in range(len(names)):
            where_a = {t: k for k, t in enumerate(track_ids[a]) if t >= 0}
            for b in range(a + 1, min(len(names), a + 1 + _OVERLAP)):
                shared = [(where_a[t], k) for k, t in enumerate(track_ids[b]) if t in where_a]
                if len(shared) >= config.min_matches:
                    db.write_matches(image_id[names[a]], image_id[names[b]], np.array(shared, dtype=np.uint32))
                    pairs.append(f"{names[a]} {names[b]}")
    finally:
        db.close()
    pairs_path.write_text("".join(f"{pair}\n" for pair in pairs))
    # verify_matches spreads the pairs over threads of its own, whose generators the global seed
    # does not fix (the terrain walk 14 read 0.935 or 0.937 deg max from run to run): a seed for
    # every pair's RANSAC makes the verification the same whatever thread runs it
    verification.ransac.random_seed = _SEED
    pycolmap.verify_matches(database, pairs_path, verification)


def _pure_turn(pycolmap, database, names: list[str], intrinsics: np.ndarray, config: PoseEstimationConfig):
    """Camera-to-world poses (F, 4, 4) of a camera turning on the spot, or None for any other clip.

    A turn has no baseline: the global mapper's positioning and adjustment place its cameras
    apart and trade rotation for translation (6 of the 8 ground-truth turns of
    scripts/eval_poses.py missed 0.3 / 0.8 deg mean / max RotErr, one frame by 55 deg). So the
    verified matches are joined into tracks and fitted with rotations alone (frame-to-frame
    rotations chained, then the OpenCV backend's rotation-only adjustment); when that fit
    explains them (`_TURN_FIT_PX`), there is no translation to find and the rotations are
    the answer.
    """
    from sanawm.evaluation._pose_opencv import _rotation_only, adjust_turns

    db = pycolmap.Database.open(database)
    try:
        frame_of = {image.image_id: names.index(image.name) for image in db.read_all_images()}
        keypoints = [np.zeros((0, 2))] * len(names)
        for image_id, i in frame_of.items():
            keypoints[i] = np.asarray(db.read_keypoints(image_id), dtype=np.float64)[:, :2]
        pair_ids, geometries = db.read_two_view_geometries()
    finally:
        db.close()
    fx, fy, cx, cy = intrinsics
    normalized = [np.stack([(k[:, 0] - cx) / fx, (k[:, 1] - cy) / fy], axis=1) for k in keypoints]
    matches = {}
    parent: dict[tuple[int, int], tuple[int, int]] = {}  # union-find over (frame, keypoint)

    def root(node):
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for pair_id, geometry in zip(pair_ids, geometries):
        a, b = (frame_of[i] for i in pycolmap.pair_id_to_image_pair(pair_id))
        inliers = np.asarray(geometry.inlier_matches).reshape(-1, 2)
        if a > b:
            a, b, inliers = b, a, inliers[:, ::-1]
        matches[a, b] = inliers
        for ka, kb in inliers:
            parent[root((a, int(ka)))] = root((b, int(kb)))
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for node in sorted(parent):
        groups.setdefault(root(node), []).append(node)
    # a track that links two keypoints of one frame holds a wrong match: drop it
    tracks = [obs for obs in groups.values() if len({j for j, _ in obs}) == len(obs)]
    focal = float(np.mean(intrinsics[:2]))
    threshold = 2.0 * config.ransac_threshold_px / focal  # the verification's RANSAC error
    rng = np.random.default_rng(_SEED)
    w2c = np.tile(np.eye(4), (len(names), 1, 1))
    for i in range(1, len(names)):
        pair = matches.get((i - 1, i))
        if pair is None or len(pair) < config.min_matches:
            return None  # the chain breaks: leave the clip to the global mapper
        turn = _rotation_only(normalized[i - 1][pair[:, 0]], normalized[i][pair[:, 1]], threshold, rng)
        w2c[i, :3, :3] = turn @ w2c[i - 1, :3, :3]
    w2c, errors = adjust_turns(w2c, tracks, normalized, threshold)
    if not len(errors) or np.percentile(errors, 90) * focal > _TURN_FIT_PX:
        return None
    c2w = invert_rigid(w2c)
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
    mapper.rotation_averaging.irls_loss_parameter_sigma = _ROTATION_SIGMA_DEG
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
