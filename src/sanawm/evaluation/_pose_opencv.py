"""Sequential structure-from-motion on OpenCV: the pose backend that needs no pycolmap.

Pipeline:
1. Tracks over the whole clip: corners (Shi-Tomasi) followed from frame to frame with
   pyramidal Lucas-Kanade optical flow, kept when the backward flow returns to the start and
   an essential matrix (or a pure turn, for a camera at rest or turning on the spot) agrees;
   new corners top the set up. Local flow, unlike descriptor matching over the whole image,
   is not fooled by repetitive textures (bricks, tiles, stripes), and it keeps tracks alive
   for many frames, which is what gives parallax and a well-posed adjustment.
2. Start: among frame pairs that share most of their tracks and show parallax no pure turn
   explains, the one whose essential-matrix pose is best determined (forward motion makes
   many pairs ambiguous by several degrees; a slow walk may need pairs further apart that
   share fewer tracks, or show less parallax) gives the first map: relative pose with baseline
   1, triangulated tracks, and a bundle adjustment of every frame in between. The pair is
   chosen, and its pose found, without the tracks that follow straight edges (occluding
   contours slide over the surface; `_EDGE_TRACK_RATIO`), and a pair whose pose turns the
   camera much further from its best pure turn than its parallax explains is no start
   (`_START_TURN_FACTOR`).
3. Growth: frames after the pair (and before it, backwards to frame 0) are registered one by
   one by PnP (RANSAC + Levenberg-Marquardt) against the mapped points, so every translation
   is measured in the scale of the first baseline; new tracks are triangulated once their
   viewing rays are far enough apart; a local bundle adjustment refines the latest cameras.
4. When PnP has too few points (the camera turned away from everything mapped), the frame is
   chained to its neighbour by the essential matrix (or by a pure rotation when there is no
   parallax), its step length borrowed from the recent motion, and mapping continues. A clip
   with no usable parallax at all (turning on the spot) is chained by rotations, then refined
   by a rotation-only bundle adjustment over all its tracks.
5. A closing bundle adjustment of the whole clip, always (its cost depends on the clip alone).
6. Steps 2-5 again from a few more start pairs, spread over the clip; the cameras kept are those
   under which the most tracks reproject within half a pixel (`_START_TRIES`, `_consensus`):
   a well-determined start pair can still lead into the wrong minimum of a forward walk.

Everything that draws random numbers is seeded, and OpenCV and numpy's BLAS run on one thread
(see `opencv_poses` and `pose_estimation`): the thread settings do not change the poses.

Everything inside works in normalised camera coordinates; pixel thresholds are converted with
the mean focal length.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from sanawm.evaluation import _bundle_adjust
from sanawm.evaluation.geometry import invert_rigid
from sanawm.evaluation.image_metrics import sharpness
from sanawm.evaluation.pose_estimation import PoseEstimationConfig, PoseEstimationError

log = logging.getLogger(__name__)

_FLOW_WINDOW = 7  # Lucas-Kanade window (pixels). LK takes the flow as constant over the window:
# wider windows straddle depth edges and the zoom of forward motion, and on soft generated video
# they mix in regions that lag behind, biasing tracks towards too little motion (a 21-pixel
# window read 89% of a generated turn where 7 pixels read 94%, and tripled the rotation error
# on ground-truth renders at 128x128)
_FLOW_LEVELS = 4  # pyramid levels: follows motions of several tens of pixels between frames
_FLOW_CHECK_PX = 0.5  # forward-backward flow must return within this distance
_CORNER_QUALITY = 0.005  # Shi-Tomasi threshold relative to the strongest corner; rendered and
# generated textures are soft, and more tracks condition forward motion far better (0.001 adds
# faint corners that on generated turns read as parallax: 2 of 4 turns then came out 13-29% short)
_FAINT_CORNER_QUALITY = 0.0005  # the same, for frames that have too few corners at the first
_SEAM_BLUR_SIGMAS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)  # blurs tried on a sharper frame before a softer one
_MIN_PARALLAX_DEG = 1.5  # rotation-compensated median parallax that a chained step trusts
_START_PARALLAX_DEG = 0.75  # the same for the start pair, which must also be well conditioned.
# 0.5 let the slow street walk 30 of scripts/eval_poses.py find a start (0.40 -> 0.12 deg mean
# RotErr), but on generated turns of the embedded model it took the spurious parallax of soft
# video for a start and read the street turn 13 at 52% of the commanded 38.4 deg instead of 99%;
# the walk now finds its start further apart (_SLOW_START_OVERLAP)
_MIN_TRIANGULATION_DEG = 0.3  # smallest angle between viewing rays for a new 3D point: below a pixel
# of parallax the depth is poor, but distant points are what pins the rotations down in the
# adjustment (1 degree left a terrain walk with 64 points and 0.66 deg mean error, 0.3: 0.17)
_MIN_PNP_POINTS = 15
_MIN_PNP_INLIER_RATIO = 0.4
_RECENT_STEPS = 5  # steps averaged for the step length of a chained frame
_WINDOW = 6  # most recent cameras refined by each local bundle adjustment
_BA_ITERATIONS = 3
_START_ITERATIONS = 15  # for the adjustment of the first map
_FINAL_ITERATIONS = 100  # for the closing adjustment of the whole clip, and the rotation-only one of a
# turn (LM stops earlier once no step lowers the cost or the cost stalls, `_bundle_adjust.solve`). A
# forward walk leaves a long, shallow valley in which rotation trades for translation, and LM
# crawls along it: at 20 iterations the anti-aliased terrain walk 27 of scripts/eval_poses.py,
# blurred to the model's sharpness, was still moving (1.36 deg mean RotErr, rotation read 1.11);
# it stops after 53, at 0.85 deg and 1.04
_START_OVERLAP = 0.5  # a start pair shares at least this fraction of the later frame's tracks
_SLOW_START_OVERLAP = 0.35  # when no pair qualifies: a camera that translates slowly reaches the
# start parallax only in pairs that share less (the street walks 26, blurred, and 30 of
# scripts/eval_poses.py, mapped as pure turns: 0.46 and 0.40 deg mean RotErr; started so: 0.10 and
# 0.13)
_SLOW_START_GAP = 8  # frames that such a start spans at least: slow translation builds its
# parallax over many frames, whereas the soft generated video of a turn, whose tracks churn,
# shows more than the start parallax between frames 2 apart (a generated 38.4 deg corridor turn
# started there read 70% of the turn instead of 92%)
_SLOW_START_PARALLAX_DEG = 0.5  # the start parallax asked of such pairs when none shows
# _START_PARALLAX_DEG. The street walk 26 of scripts/eval_poses.py rendered anti-aliased shows at
# most 0.74 deg (frames 0 and 30) and was mapped as a turn: 0.43 deg mean RotErr, started so 0.06.
# Only over the _SLOW_START_GAP frames: between frames 1 or 2 apart, 0.5 deg started generated
# turns from their spurious parallax (see _START_PARALLAX_DEG); over 8 frames none of the 8 turns
# of scripts/eval_embedded.py finds such a pair, generated or ground truth (sharp or blurred)
_START_TURN_FACTOR = 3.0  # a start pair's essential-matrix rotation may differ from its best pure
# turn (`_rotation_only`) by at most this x the parallax that turn leaves (`_parallax_deg`). A
# camera's translation shows as that parallax; a pose that turns the camera much further from
# the pure turn than the parallax it explains has traded rotation for translation along the
# rotation-translation valley. On a generated 38.4 deg room turn (scripts/eval_embedded.py, clip
# 10), whose soft frames show spurious parallax, the pair 24-26 had an essential rotation of
# 0.2-0.3 deg, 3.3-3.6 deg from the pure turn at 0.9-1.0 deg of parallax: started from it (with
# the edge tracks hidden) the turn read 82% of the command, refused 98%. On the ground-truth
# clips of scripts/eval_poses.py the pairs refused so lie degrees from their pure turn (the
# anti-aliased terrain walk 27: 4-8 deg at 1.0-1.7 deg); three of the 128 clips moved, by at most
# 0.013 deg mean RotErr, all within the bounds. At 1 x the
# parallax every start of the corridor walk 11 and the slow street walk 26 was refused (mapped as
# turns: 1.7-2.4 deg mean RotErr)
_START_ANCHORS = 16  # anchors tried for the start pair, spread over the clip
_START_REACH = 30  # frames after an anchor tried as its partner
_START_TRIES = 6  # start pairs mapped, each through the whole clip; the cameras kept are those
# that explain the most tracks (`_consensus`). The best-determined start pair can still lead into a
# wrong minimum along the forward-motion valley, and the closing adjustment's cost cannot tell:
# it is lowest for the cameras that the map's points, pruned while mapping from them, agree with.
# On the anti-aliased terrain walk 27 of scripts/eval_poses.py blurred to the model's sharpness,
# the start pairs end in two minima, 0.15-0.17 deg mean RotErr (106-109 of its 193 tracks agree)
# or 0.78-1.42 (91-99); the best-determined pair (frames 16-24) led to 0.90, the fifth one tried
# (frames 16-31) to 0.17. On the 128 ground-truth runs of scripts/eval_poses.py no clip left the
# bounds (benchmarks/README.md)
_START_TRY_SPACING = 2  # a start pair tried differs by more frames than this from every one tried
# before, in its anchor or in its partner: neighbouring pairs lead to the same minimum
_CONSENSUS_PX = 0.5  # a track agrees with the cameras when its point reprojects this close in
# every view: about the accuracy of a track that follows a fixed point (`_FINAL_LOSS_SCALE`)
_CONSENSUS_FRACTION = 0.4  # the least fraction of the counted tracks that the first map must
# explain for the count to choose between maps. Aliased renders (one ray per pixel) fold fine
# texture into patterns that do not move with the surface, and then the count prefers wrong
# cameras: the one-ray terrain walk 27, blurred, mapped from its best start reads 0.12 deg mean
# RotErr with 32 of 133 tracks, and from other starts 1.2-3.2 deg with 25-41. Of the clips 00, 11,
# 14, 22, 27, 29, 30 and 31 (sharp and blurred), the first map explains 24-31% on the one-ray
# walks 27 and 11 blurred, 45-68% on the other one-ray renders and 46-89% on the anti-aliased ones
_CONSENSUS_VIEWS = 3  # tracks seen in fewer frames are left out of the count (two views always
# fit a point)
_TURN_HYPOTHESES = 64  # RANSAC hypotheses for a pure rotation (2 points each: few are needed)
_OUTLIER_FACTOR = 4.0  # points whose reprojection error exceeds this x threshold are dropped
_EDGE_RATIO = 0.25  # a keypoint's error along an edge weighs less in the closing adjustment once
# the smaller eigenvalue of its structure tensor falls under this fraction of the larger
# (`_whitening`). Measured on the clips of scripts/eval_poses.py: at 1 (every keypoint but a
# perfect corner weighed so, in every adjustment) the one-ray room walk 00 went from 0.298 to
# 0.334 deg mean RotErr, off the 0.3 bound; at 0.25, closing adjustment only, it reads 0.253.
# Weighing so in the local adjustments too took the anti-aliased terrain walk 27 further (sharp
# 0.69 deg mean instead of 0.93), but the blurred one-ray room walk 00 slid along the
# forward-motion valley, from 0.41 to 1.62 deg
_MIN_EDGE_WEIGHT = 0.1  # the least weight of an error along an edge (a ratio of 0.01 and below)
_EDGE_TRACK_RATIO = 0.005  # tracks whose keypoints' structure tensors have a median smaller-to-larger
# eigenvalue ratio under this follow straight edges at the flow window's scale (box edges, shadow
# edges, hill outlines against the sky: occluding contours, which slide over the surface as the
# camera moves), not points: the start pair is chosen, and its pose found, without them
# (`_without_edge_tracks`). On the anti-aliased sharp terrain walk 27 of scripts/eval_poses.py
# 11 of the 26 tracks that lie over 2 px from their point triangulated from the true cameras are
# such tracks; its start pair (frames 16-20) then led to a wrong minimum, 1.19 deg mean RotErr
# (0.06 without them). Dropping them from the whole map instead cost the blurred one-ray 27 its
# minimum (0.12 -> 1.7 deg at a ratio of 0.01)
_FINAL_LOSS_SCALE = 0.5  # the closing adjustment's Cauchy scale, x threshold. Tracks are good to
# a few tenths of a pixel where they follow a fixed point, and those that slide along an outline
# drift further: once the cameras are close, a narrower loss lets fewer of them pull (on the
# ground-truth clips of scripts/eval_poses.py the room walk 00 went from 0.33 to 0.30 deg mean
# RotErr and the corridor walk 11 from 0.34 to 0.25; the local adjustments keep the full
# threshold, which must still pull cameras that start a pixel off into place)


@dataclass
class _FrameData:
    keypoints: np.ndarray  # (N, 2) pixels
    normalized: np.ndarray  # (N, 2) x/z, y/z in camera coordinates
    track: np.ndarray  # (N,) track id per keypoint, -1 when the keypoint is in no track
    whiten: np.ndarray  # (N, 2, 2) how its position error counts in the adjustments (`_whitening`)
    edge_ratio: np.ndarray  # (N,) its structure tensor's eigenvalue ratio (`_edge_ratios`)


@dataclass
class _State:
    frames: list[_FrameData | None]  # filled as the tracker reaches each frame
    w2c: list[np.ndarray | None]  # (4, 4) world-to-camera per registered frame
    track_obs: list[list[tuple[int, int]]] = field(default_factory=list)  # (frame, keypoint) per track
    points: dict[int, np.ndarray] = field(default_factory=dict)  # track id -> world point


def _bearings(normalized: np.ndarray) -> np.ndarray:
    b = np.concatenate([normalized, np.ones((len(normalized), 1))], axis=1)
    return b / np.linalg.norm(b, axis=1, keepdims=True)


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.shape[-1] == 3 else np.ascontiguousarray(frame[..., 0])


def _corners(
    gray: np.ndarray, count: int, spacing: float, existing: np.ndarray, needed: int = 0, faint: bool = False
) -> np.ndarray:
    """Up to `count` new corners (M, 2), at least `spacing` pixels from `existing` ones.

    When fewer than `needed` pass the quality threshold (a frame of sky and a soft horizon),
    fainter corners are taken too rather than giving the frame up; only then, because on
    frames with texture enough the faint ones add more noise than constraint. `faint` takes
    them at once."""
    if count <= 0:
        return np.zeros((0, 2))
    mask = np.full(gray.shape, 255, dtype=np.uint8)
    for x, y in existing:
        cv2.circle(mask, (int(round(x)), int(round(y))), int(spacing), 0, -1)
    found = None
    for quality in (_FAINT_CORNER_QUALITY,) if faint else (_CORNER_QUALITY, _FAINT_CORNER_QUALITY):
        found = cv2.goodFeaturesToTrack(gray, count, quality, spacing, mask=mask, blockSize=5)
        if found is not None and len(found) >= needed:
            break
    if found is None:
        return np.zeros((0, 2))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 20, 0.01)
    return cv2.cornerSubPix(gray, found.astype(np.float32), (3, 3), (-1, -1), criteria).reshape(-1, 2).astype(np.float64)


def _sharpness(gray: np.ndarray) -> float:
    return float(sharpness(gray[..., None])[0])


def _match_sharpness(gray: np.ndarray, softer: np.ndarray) -> np.ndarray:
    """`gray` under the least Gaussian blur of a short ladder that leaves it no sharper than
    `softer` (itself when it already is not)."""
    target, blurred = _sharpness(softer), gray
    for sigma in _SEAM_BLUR_SIGMAS:
        if _sharpness(blurred) <= target:
            break
        blurred = cv2.GaussianBlur(gray, (0, 0), sigma)
    return blurred


def _structure_tensor(gray: np.ndarray) -> np.ndarray:
    """(H, W, 3) sums of Ix^2, IxIy, Iy^2 over the Lucas-Kanade window around every pixel."""
    g = gray.astype(np.float32) / 255.0
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    window = (_FLOW_WINDOW, _FLOW_WINDOW)
    return np.stack([cv2.boxFilter(a, -1, window, normalize=False) for a in (gx * gx, gx * gy, gy * gy)], axis=-1)


def _whitening(tensor: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """(N, 2, 2) matrices W that weigh a keypoint's position error r as W r.

    Lucas-Kanade pins a point down across the image gradient and only weakly along an edge
    (the aperture problem), and its error is largest there: corners on box edges, shadow edges
    and hill outlines against the sky slide along them. W = V diag(w) V^T from the structure
    tensor's eigenpairs (l, V) over the flow window, w = sqrt(l / l_max / _EDGE_RATIO) clipped
    to [_MIN_EDGE_WEIGHT, 1], keeps the full weight across the edge and less along it."""
    values, vectors = _tensor_eigen(tensor, pixels)
    share = values / np.maximum(values[:, 1:], 1e-12) / _EDGE_RATIO
    weight = np.sqrt(np.clip(share, _MIN_EDGE_WEIGHT**2, 1.0))
    return np.einsum("nij,nj,nkj->nik", vectors, weight, vectors)


def _tensor_eigen(tensor: np.ndarray, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (N, 2), ascending, and eigenvectors (N, 2, 2) of the structure tensor
    (`_structure_tensor`) at the pixels nearest to `pixels` (N, 2)."""
    height, width = tensor.shape[:2]
    x = np.clip(np.rint(pixels[:, 0]).astype(int), 0, width - 1)
    y = np.clip(np.rint(pixels[:, 1]).astype(int), 0, height - 1)
    sxx, sxy, syy = (tensor[y, x, c].astype(np.float64) for c in range(3))
    m = np.stack([np.stack([sxx, sxy], -1), np.stack([sxy, syy], -1)], -2).reshape(-1, 2, 2)
    return np.linalg.eigh(m)


def _edge_ratios(tensor: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """(N,) smaller over larger eigenvalue of the structure tensor at `pixels`: near 0 on a
    straight edge, near 1 on an isotropic corner."""
    values = _tensor_eigen(tensor, pixels)[0]
    return values[:, 0] / np.maximum(values[:, 1], 1e-12)


def _flow(gray_a: np.ndarray, gray_b: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 2) of frame a followed into frame b; returns (positions, reliable mask)."""
    if len(points) == 0:
        return points, np.zeros(0, dtype=bool)
    params = dict(winSize=(_FLOW_WINDOW, _FLOW_WINDOW), maxLevel=_FLOW_LEVELS - 1,
                  criteria=(cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 30, 0.01))
    start = points.astype(np.float32).reshape(-1, 1, 2)
    ahead, ok, _ = cv2.calcOpticalFlowPyrLK(gray_a, gray_b, start, None, **params)
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(gray_b, gray_a, ahead, None, **params)
    ahead, back = ahead.reshape(-1, 2).astype(np.float64), back.reshape(-1, 2)
    height, width = gray_b.shape
    inside = (ahead[:, 0] >= 0) & (ahead[:, 0] <= width - 1) & (ahead[:, 1] >= 0) & (ahead[:, 1] <= height - 1)
    returned = np.linalg.norm(back - points, axis=1) < _FLOW_CHECK_PX
    return ahead, ok.ravel().astype(bool) & ok_back.ravel().astype(bool) & inside & returned


def _essential(xa: np.ndarray, xb: np.ndarray, threshold: float):
    """RANSAC essential matrix on normalised points; returns (E, inlier mask) or (None, None)."""
    if len(xa) < 8:
        return None, None
    e, mask = cv2.findEssentialMat(xa, xb, np.eye(3), method=cv2.USAC_ACCURATE, prob=0.999, threshold=threshold)
    if e is None or e.shape != (3, 3):  # several stacked solutions: take the first
        e = None if e is None else e[:3]
    return e, (mask.ravel() > 0 if mask is not None else None)


def _relative_pose(xa, xb, e, mask):
    """(R, t, inliers) with x_b = R x_a + t (t unit length) from an essential matrix."""
    _, r, t, pose_mask = cv2.recoverPose(e, xa, xb, np.eye(3), mask=mask.astype(np.uint8).copy())
    return r, t.ravel(), pose_mask.ravel() > 0


def _sampson(xa: np.ndarray, xb: np.ndarray, rotation: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Signed Sampson distances (normalised units) of correspondences to E = [t]x R."""
    tx = np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])
    e = tx @ rotation
    ha = np.c_[xa, np.ones(len(xa))]
    hb = np.c_[xb, np.ones(len(xb))]
    ea, eb = ha @ e.T, hb @ e
    return (hb * ea).sum(axis=1) / np.sqrt(ea[:, 0] ** 2 + ea[:, 1] ** 2 + eb[:, 0] ** 2 + eb[:, 1] ** 2)


def _two_view_uncertainty_deg(xa: np.ndarray, xb: np.ndarray, rotation: np.ndarray, t: np.ndarray) -> float:
    """Standard deviation (degrees) of the worst-determined combination of a relative pose.

    Forward motion with distant points leaves a valley in which rotation and translation
    direction trade off (solutions several degrees apart fit equally well), and a start on
    the wrong side of it cannot be repaired later. The Gauss-Newton covariance of the
    Sampson residuals over the 5 pose parameters (rotation, translation direction), scaled
    by the robust residual spread, measures how deep that valley is.
    """
    base = _sampson(xa, xb, rotation, t)
    helper = np.array([1.0, 0.0, 0.0]) if abs(t[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(t, helper)
    u /= np.linalg.norm(u)
    v = np.cross(t, u)
    step = 1e-6
    columns = []
    for axis in np.eye(3):
        turned = cv2.Rodrigues(axis * step)[0] @ rotation
        columns.append((_sampson(xa, xb, turned, t) - base) / step)
    for direction in (u, v):
        moved = t + step * direction
        columns.append((_sampson(xa, xb, rotation, moved / np.linalg.norm(moved)) - base) / step)
    jacobian = np.stack(columns, axis=1)
    weakest = np.linalg.eigvalsh(jacobian.T @ jacobian)[0]
    spread = 1.4826 * np.median(np.abs(base))
    return float(np.degrees(spread / np.sqrt(max(weakest, 1e-300))))


def _parallax_deg(xa: np.ndarray, xb: np.ndarray, rotation: np.ndarray) -> float:
    """Median angle between matched rays left after rotating the first set by `rotation`.

    With `rotation` the best pure-rotation fit this measures the parallax that no camera
    turn explains: near zero for a camera turning on the spot (or any scene at one depth),
    where the essential matrix is degenerate and nothing can be triangulated.
    """
    ba = _bearings(xa) @ rotation.T
    bb = _bearings(xb)
    cos = np.clip((ba * bb).sum(axis=1), -1.0, 1.0)
    return float(np.degrees(np.median(np.arccos(cos))))


def _angle_deg(rotation: np.ndarray) -> float:
    """Angle (degrees) of a rotation matrix."""
    return float(np.degrees(np.arccos(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))


def _kabsch(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Rotations R (..., 3, 3) minimising sum |q - R p|^2 over point sets (..., N, 3)."""
    u, _, vt = np.linalg.svd(np.swapaxes(q, -1, -2) @ p)
    d = np.sign(np.linalg.det(u @ vt))
    d = np.where(d == 0, 1.0, d)
    fix = np.broadcast_to(np.eye(3), u.shape).copy()
    fix[..., 2, 2] = d
    return u @ fix @ vt


def _rotation_only(xa: np.ndarray, xb: np.ndarray, threshold: float, rng: np.random.Generator) -> np.ndarray:
    """Rotation R with b_b = R b_a from bearing pairs: 2-point RANSAC (all hypotheses at
    once), then Kabsch on the inliers of the best."""
    ba, bb = _bearings(xa), _bearings(xb)
    picks = np.stack([rng.choice(len(ba), size=2, replace=False) for _ in range(_TURN_HYPOTHESES)])
    hypotheses = _kabsch(ba[picks], bb[picks])  # (H, 3, 3)
    residual = np.linalg.norm(np.einsum("hij,nj->hni", hypotheses, ba) - bb, axis=-1)
    best = hypotheses[np.argmax((residual < threshold).sum(axis=1))]
    inliers = np.linalg.norm(ba @ best.T - bb, axis=1) < threshold
    return _kabsch(ba[inliers], bb[inliers]) if inliers.sum() >= 3 else best


def _triangulate(w2c_a, w2c_b, xa, xb):
    """Linear (DLT) triangulation of normalised correspondences; (M, 3) world points."""
    pts = cv2.triangulatePoints(w2c_a[:3], w2c_b[:3], xa.T.astype(np.float64), xb.T.astype(np.float64))
    return (pts[:3] / pts[3]).T


def _reprojection_ok(w2c, points, x, threshold):
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    in_front = cam[:, 2] > 1e-6
    proj = cam[:, :2] / np.where(in_front, cam[:, 2], 1.0)[:, None]
    return in_front & (np.linalg.norm(proj - x, axis=1) < threshold)


class _SequentialSfM:
    def __init__(self, frames: np.ndarray, intrinsics: np.ndarray, config: PoseEstimationConfig):
        self.config = config
        focal = float(intrinsics[:, :2].mean())
        self.threshold = config.ransac_threshold_px / focal  # pixels -> normalised units
        self.rng = np.random.default_rng(0)
        self.origin = 0  # the frame held fixed in adjustments: the first map's anchor
        self.intrinsics = intrinsics
        self.gray = [_gray(f) for f in frames]
        self.tensor = [_structure_tensor(g) for g in self.gray]
        # corners spread over the image: about max_features of them fit at this spacing
        height, width = frames.shape[1:3]
        self.spacing = max(3.0, 0.7 * np.sqrt(height * width / config.max_features))
        self.state = _State(frames=[None] * len(frames), w2c=[None] * len(frames))
        first = _corners(self.gray[0], config.max_features, self.spacing, np.zeros((0, 2)), config.min_matches)
        self.state.frames[0] = self._frame(0, first, np.zeros(0, dtype=int))

    def _frame(self, i: int, new_points: np.ndarray, tracked: np.ndarray, tracked_ids: np.ndarray | None = None) -> _FrameData:
        """Frame i's keypoints: `tracked` (with their track ids) followed by `new_points`."""
        pixels = np.concatenate([tracked.reshape(-1, 2), new_points])
        if len(pixels) < self.config.min_matches:
            raise PoseEstimationError(
                f"frame {i}: only {len(pixels)} trackable corners found (need {self.config.min_matches}); "
                "the frame is too flat, dark or blurry to track"
            )
        fx, fy, cx, cy = self.intrinsics[i]
        normalized = np.stack([(pixels[:, 0] - cx) / fx, (pixels[:, 1] - cy) / fy], axis=1)
        track = np.full(len(pixels), -1)
        if tracked_ids is not None:
            track[: len(tracked_ids)] = tracked_ids
        tensor = self.tensor[i]
        return _FrameData(pixels, normalized, track, _whitening(tensor, pixels), _edge_ratios(tensor, pixels))

    # ---- tracks -------------------------------------------------------------------------
    def _follow(self, i: int, gray_prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame i-1's keypoints followed into frame i from `gray_prev` (frame i-1 as tracked):
        (indices of the consistent ones, every keypoint's position in frame i)."""
        prev = self.state.frames[i - 1]
        moved, reliable = _flow(gray_prev, self.gray[i], prev.keypoints)
        ia = np.flatnonzero(reliable)
        fx, fy, cx, cy = self.intrinsics[i]
        x_cur = np.stack([(moved[ia, 0] - cx) / fx, (moved[ia, 1] - cy) / fy], axis=1)
        if len(ia) >= 8:
            # inliers of the essential matrix, or of a pure turn when that explains more: a
            # camera at rest (identical frames) or turning on the spot leaves E undefined
            x_prev = prev.normalized[ia]
            _, mask = _essential(x_prev, x_cur, self.threshold)
            turn = _rotation_only(x_prev, x_cur, self.threshold, self.rng)
            turned = np.linalg.norm(_bearings(x_prev) @ turn.T - _bearings(x_cur), axis=1) < self.threshold
            ia = ia[turned] if mask is None or turned.sum() > mask.sum() else ia[mask]
        return ia, moved

    def _link(self, i: int) -> None:
        """Follow frame i-1's keypoints into frame i, keep the consistent ones, extend tracks.

        When too few get through, the step is tried once more from frame i-1 blurred to frame
        i's sharpness, its untracked corners taken again there with the faint threshold: the
        input frame of a generated clip is sharper than the frames generated after it, and its
        finest corners (the grain of grass and sand) are gone in frame 1, where coarser, fainter
        ones survive. Only steps that would fail take this path, so every clip tracked without
        it is tracked exactly as before."""
        s = self.state
        ia, moved = self._follow(i, self.gray[i - 1])
        if len(ia) < self.config.min_matches:
            prev = s.frames[i - 1]
            tracked = len(prev.track) - int((prev.track < 0).sum())  # tracked keypoints come first
            assert (prev.track[:tracked] >= 0).all()
            kept = prev.keypoints[:tracked]
            matched = _match_sharpness(self.gray[i - 1], self.gray[i])
            fresh = _corners(matched, self.config.max_features - tracked, self.spacing, kept, faint=True)
            s.frames[i - 1] = self._frame(i - 1, fresh, kept, prev.track[:tracked])
            ia, moved = self._follow(i, matched)
        if len(ia) < self.config.min_matches:
            raise PoseEstimationError(
                f"only {len(ia)} points could be followed from frame {i - 1} to frame {i} "
                f"(need {self.config.min_matches}); the video may cut, flash or lose texture there"
            )
        prev = s.frames[i - 1]
        for ka in ia:
            if prev.track[ka] < 0:
                prev.track[ka] = len(s.track_obs)
                s.track_obs.append([(i - 1, int(ka))])
        ids = prev.track[ia]
        tracked = moved[ia]
        fresh = _corners(
            self.gray[i], self.config.max_features - len(ia), self.spacing, tracked, self.config.min_matches - len(ia)
        )
        s.frames[i] = self._frame(i, fresh, tracked, ids)
        for kb, t in enumerate(ids):  # the tracked points come first in frame i
            s.track_obs[t].append((i, kb))

    def _shared(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Keypoint indices of the tracks seen in both frame a and frame b."""
        fa, fb = self.state.frames[a], self.state.frames[b]
        lookup = {t: k for k, t in enumerate(fa.track) if t >= 0}
        pairs = [(lookup[t], k) for k, t in enumerate(fb.track) if t >= 0 and t in lookup]
        if not pairs:
            return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
        ka, kb = np.array(pairs).T
        return ka, kb

    # ---- registration -------------------------------------------------------------------
    def _turn_only(self, xa: np.ndarray, xb: np.ndarray, parallax_deg: float = _MIN_PARALLAX_DEG) -> np.ndarray | None:
        """The rotation relating two views when a pure turn explains them (less than
        `parallax_deg` of parallax left over), else None."""
        rotation = _rotation_only(xa, xb, self.threshold, self.rng)
        return rotation if _parallax_deg(xa, xb, rotation) < parallax_deg else None

    def _pnp(self, i: int, neighbour: int) -> bool:
        """Register frame i against the mapped points it sees (`neighbour`'s pose as the guess)."""
        s = self.state
        frame = s.frames[i]
        keys = [k for k, t in enumerate(frame.track) if t in s.points]
        if len(keys) < _MIN_PNP_POINTS:
            return False
        obj = np.array([s.points[frame.track[k]] for k in keys])
        img = frame.normalized[keys]
        guess = s.w2c[neighbour]
        rvec0, _ = cv2.Rodrigues(guess[:3, :3])
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(
            obj, img, np.eye(3), None, rvec=rvec0.copy(), tvec=guess[:3, 3].copy().reshape(3, 1),
            useExtrinsicGuess=True, iterationsCount=300, reprojectionError=self.threshold,
            confidence=0.999, flags=cv2.SOLVEPNP_ITERATIVE,
        )
        if not ok or inliers is None:
            return False
        inliers = inliers.ravel()
        if len(inliers) < _MIN_PNP_POINTS or len(inliers) < _MIN_PNP_INLIER_RATIO * len(keys):
            return False
        rvec, tvec = cv2.solvePnPRefineLM(obj[inliers], img[inliers], np.eye(3), None, rvec, tvec)
        w2c = np.eye(4)
        w2c[:3, :3] = cv2.Rodrigues(rvec)[0]
        w2c[:3, 3] = tvec.ravel()
        s.w2c[i] = w2c
        return True

    def _recent_step(self) -> float:
        """Typical camera-centre step over the last registered frames (1 if none moved)."""
        centres = [invert_rigid(p)[:3, 3] for p in self.state.w2c if p is not None]
        steps = np.linalg.norm(np.diff(np.array(centres), axis=0), axis=1) if len(centres) > 1 else np.zeros(0)
        moving = steps[steps > 1e-9]
        return float(moving[-_RECENT_STEPS:].mean()) if len(moving) else 1.0

    def _chain(self, i: int, neighbour: int) -> None:
        """Register frame i from the tracks it shares with the registered frame `neighbour`
        alone: used when too few mapped points are in view."""
        s = self.state
        kn, ki = self._shared(neighbour, i)
        xn, xi = s.frames[neighbour].normalized[kn], s.frames[i].normalized[ki]
        relative = np.eye(4)  # neighbour camera -> camera i
        turn = self._turn_only(xn, xi)
        e, mask = (None, None) if turn is not None else _essential(xn, xi, self.threshold)
        if e is not None and mask.sum() >= self.config.min_matches:
            r, t, _ = _relative_pose(xn, xi, e, mask)
            relative[:3, :3], relative[:3, 3] = r, t * self._recent_step()
        else:
            relative[:3, :3] = turn if turn is not None else _rotation_only(xn, xi, self.threshold, self.rng)
        s.w2c[i] = relative @ s.w2c[neighbour]

    # ---- mapping ------------------------------------------------------------------------
    def _add_points(self, i: int) -> int:
        """Triangulate tracks seen in frame i that have no point yet; returns how many."""
        s = self.state
        frame, w2c_i = s.frames[i], s.w2c[i]
        centre_i = invert_rigid(w2c_i)[:3, 3]
        groups: dict[int, list[tuple[int, int, int]]] = {}
        for k, t in enumerate(frame.track):
            if t < 0 or t in s.points:
                continue
            # the earliest registered view gives the widest baseline
            for j, kj in s.track_obs[t]:
                if j != i and s.w2c[j] is not None:
                    groups.setdefault(j, []).append((t, kj, k))
                    break
        added = 0
        for j, items in groups.items():
            t_ids, kj, ki = (np.array(v) for v in zip(*items))
            w2c_j = s.w2c[j]
            xj, xi = s.frames[j].normalized[kj], frame.normalized[ki]
            ray_j = _bearings(xj) @ w2c_j[:3, :3]  # world directions: R^T b
            ray_i = _bearings(xi) @ w2c_i[:3, :3]
            baseline = np.linalg.norm(centre_i - invert_rigid(w2c_j)[:3, 3])
            if baseline < 1e-9:
                continue
            angle = np.degrees(np.arccos(np.clip((ray_j * ray_i).sum(axis=1), -1.0, 1.0)))
            wide = angle >= _MIN_TRIANGULATION_DEG
            if not wide.any():
                continue
            pts = _triangulate(w2c_j, w2c_i, xj[wide], xi[wide])
            ok = _reprojection_ok(w2c_j, pts, xj[wide], self.threshold) & _reprojection_ok(
                w2c_i, pts, xi[wide], self.threshold
            )
            for t, p in zip(t_ids[wide][ok], pts[ok]):
                s.points[int(t)] = p
            added += int(ok.sum())
        return added

    def _adjust(
        self, frames: range, iterations: int = _BA_ITERATIONS, loss_scale: float = 1.0, whiten: bool = False
    ) -> None:
        """Bundle adjustment moving the registered cameras in `frames` (and the points they
        see); every other registered camera that sees those points constrains them. The
        Cauchy loss's scale is `loss_scale` x the inlier threshold; `whiten` weighs each
        keypoint's error by its frame's `_FrameData.whiten` (errors along an edge count less)."""
        s = self.state
        free = {j for j in frames if s.w2c[j] is not None} - {self.origin}  # the origin holds the gauge
        seen = set(np.concatenate([s.frames[j].track for j in free]).tolist()) if free else set()
        tracks = sorted(seen & s.points.keys())
        if not tracks or not free:
            return
        cams: dict[int, int] = {}
        obs_cam, obs_point, obs_xy, obs_whiten = [], [], [], []
        for n, t in enumerate(tracks):
            for j, k in s.track_obs[t]:
                if s.w2c[j] is not None:
                    obs_cam.append(cams.setdefault(j, len(cams)))
                    obs_point.append(n)
                    obs_xy.append(s.frames[j].normalized[k])
                    obs_whiten.append(s.frames[j].whiten[k])
        frames = list(cams)
        problem = _bundle_adjust.Problem(
            w2c=np.stack([s.w2c[j] for j in frames]),
            free=np.array([j in free for j in frames]),
            points=np.stack([s.points[t] for t in tracks]),
            obs_cam=np.array(obs_cam),
            obs_point=np.array(obs_point),
            obs_xy=np.array(obs_xy),
            obs_whiten=np.array(obs_whiten) if whiten else None,
        )
        errors = _bundle_adjust.solve(problem, loss_scale * self.threshold, iterations)
        for j, pose in zip(frames, problem.w2c):
            s.w2c[j] = pose
        worst = np.zeros(len(tracks))
        np.maximum.at(worst, problem.obs_point, errors)
        for t, point, err in zip(tracks, problem.points, worst):
            if err > _OUTLIER_FACTOR * self.threshold:
                del s.points[t]
            else:
                s.points[t] = point

    def _adjust_turns(self) -> None:
        """Bundle adjustment of a camera that only turns (see `adjust_turns`)."""
        s = self.state
        normalized = [frame.normalized for frame in s.frames]
        s.w2c = list(adjust_turns(np.stack(s.w2c), s.track_obs, normalized, self.threshold)[0])

    def _start_candidate(
        self, anchor: int, i: int, parallax_deg: float = _START_PARALLAX_DEG
    ) -> tuple[float, np.ndarray, np.ndarray] | None:
        """(uncertainty in degrees, R, t) of the pair (anchor, i) as a start, or None when it
        lacks matches or parallax (see `_two_view_uncertainty_deg`)."""
        s = self.state
        ka, kb = self._shared(anchor, i)
        xa, xb = s.frames[anchor].normalized[ka], s.frames[i].normalized[kb]
        if len(xa) < self.config.min_matches:
            return None
        turn = _rotation_only(xa, xb, self.threshold, self.rng)
        parallax = _parallax_deg(xa, xb, turn)
        if parallax < parallax_deg:
            return None
        e, mask = _essential(xa, xb, self.threshold)
        if e is None or mask.sum() < self.config.min_matches:
            return None
        r, t, good = _relative_pose(xa, xb, e, mask)
        if good.sum() < self.config.min_matches:
            return None
        if _angle_deg(r @ turn.T) > _START_TURN_FACTOR * parallax:
            return None  # a turn traded for a translation the parallax does not show
        return _two_view_uncertainty_deg(xa[good], xb[good], r, t), r, t

    def _start_pairs(
        self, overlap: float, gap: int = 1, parallax_deg: float = _START_PARALLAX_DEG
    ) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
        """Start pairs (anchor, i, R, t), the best-determined relative pose first.

        Candidates: anchors spread over the clip, each paired with the frames at least `gap`
        after it that still share the fraction `overlap` of their tracks with it and show
        `parallax_deg` of parallax no turn explains. Ranking rather than taking the first
        usable pair matters: in forward motion many pairs have parallax yet fit a pose several
        degrees off as well as the true one.
        """
        count = len(self.state.frames)
        step = max(1, count // _START_ANCHORS)
        found = []
        for anchor in range(0, count - 1, step):
            for i in range(anchor + 1, min(count, anchor + 1 + _START_REACH)):
                wanted = max(self.config.min_matches, overlap * int((self.state.frames[i].track >= 0).sum()))
                if len(self._shared(anchor, i)[0]) < wanted:
                    break
                if i - anchor < gap:
                    continue
                candidate = self._start_candidate(anchor, i, parallax_deg)
                if candidate is not None:
                    found.append((candidate[0], anchor, i, candidate[1], candidate[2]))
        found.sort(key=lambda c: c[0])  # stable: among equals, the earlier pair
        return [c[1:] for c in found]

    def _start(self, anchor: int, i: int, r: np.ndarray, t: np.ndarray) -> bool:
        """Make the first map from frames `anchor` (at the identity) and i; False if too few
        points triangulate."""
        s = self.state
        s.w2c[anchor] = np.eye(4)
        s.w2c[i] = np.eye(4)
        s.w2c[i][:3, :3], s.w2c[i][:3, 3] = r, t
        if self._add_points(i) < _MIN_PNP_POINTS:
            s.w2c[anchor] = s.w2c[i] = None
            s.points.clear()
            return False
        self.origin = anchor
        return True

    def _register(self, j: int, neighbour: int) -> None:
        """Register frame j next to the registered frame `neighbour`, extend the map."""
        if not self._pnp(j, neighbour):
            log.debug("frame %d: PnP failed, chaining from frame %d", j, neighbour)
            self._chain(j, neighbour)
        self._add_points(j)

    def _edge_tracks(self) -> np.ndarray:
        """(T,) which tracks follow a straight edge rather than a point (`_EDGE_TRACK_RATIO`)."""
        s = self.state
        return np.array(
            [bool(obs) and np.median([s.frames[j].edge_ratio[k] for j, k in obs]) < _EDGE_TRACK_RATIO
             for obs in s.track_obs],
            dtype=bool,
        )  # fmt: skip

    @contextlib.contextmanager
    def _without_edge_tracks(self):
        """Within the block, the tracks along straight edges are in no frame (`_shared` and the
        start pair's choice do not see them); afterwards they are back."""
        frames = self.state.frames
        edge, saved = self._edge_tracks(), [f.track for f in frames]
        for f in frames:
            f.track = np.where((f.track >= 0) & edge[np.maximum(f.track, 0)], -1, f.track) if len(edge) else f.track
        try:
            yield
        finally:
            for f, track in zip(frames, saved):
                f.track = track

    def track(self) -> None:
        """Follow the corners through the whole clip (step 1)."""
        for i in range(1, len(self.state.frames)):
            self._link(i)

    def _map(self, anchor: int, first: int, r: np.ndarray, t: np.ndarray) -> bool:
        """Steps 2, 3 and 5 from the start pair (anchor, first): the cameras of every frame
        and the map, in `state`; False (and nothing mapped) if too few points triangulate."""
        s = self.state
        count = len(s.frames)
        s.w2c, s.points = [None] * count, {}
        if not self._start(anchor, first, r, t):
            return False
        for j in range(anchor + 1, first):
            self._register(j, j - 1)
        self._add_points(first)
        # the first map decides the scale and everything built on it: adjust it whole
        self._adjust(range(anchor, first + 1), _START_ITERATIONS)
        for j in range(anchor - 1, -1, -1):  # back to the start of the clip
            self._register(j, j + 1)
            self._adjust(range(j, min(count, j + _WINDOW)))
        for i in range(first + 1, count):  # on to its end
            self._register(i, i - 1)
            self._adjust(range(max(0, i - _WINDOW + 1), i + 1))
        # a global pass reduces drift; once the cameras are close, errors along edges pull less
        self._adjust(range(count), _FINAL_ITERATIONS, _FINAL_LOSS_SCALE, whiten=True)
        return True

    def _consensus(self) -> tuple[int, int]:
        """(agreed, counted): of the `counted` tracks seen in at least `_CONSENSUS_VIEWS` frames,
        how many the mapped cameras explain: the track's point triangulated from all its views
        (linear, least squares) reprojects within `_CONSENSUS_PX` in every one of them, in
        front of each camera."""
        s = self.state
        w2c = np.stack(s.w2c)
        limit = _CONSENSUS_PX / float(self.intrinsics[:, :2].mean())
        agreed, counted = 0, 0
        for obs in s.track_obs:
            if len(obs) < _CONSENSUS_VIEWS:
                continue
            counted += 1
            cams = w2c[[j for j, _ in obs], :3]  # (V, 3, 4)
            x = np.stack([s.frames[j].normalized[k] for j, k in obs])  # (V, 2)
            rows = (x[:, :, None] * cams[:, 2:3, :] - cams[:, :2, :]).reshape(-1, 4)
            point = np.linalg.svd(rows)[2][-1]
            if abs(point[3]) < 1e-12:
                continue  # a point at infinity: no finite depth to check
            cam = cams[:, :, :3] @ (point[:3] / point[3]) + cams[:, :, 3]
            if (cam[:, 2] <= 1e-6).any():
                continue
            if (np.linalg.norm(cam[:, :2] / cam[:, 2:] - x, axis=1) < limit).all():
                agreed += 1
        return agreed, counted

    def _spread_out(self, starts: list) -> list:
        """The first `_START_TRIES` of `starts` (in order) that differ from every one taken by
        more than `_START_TRY_SPACING` frames in the anchor or in the partner frame."""
        taken = []
        for start in starts:
            near = any(
                abs(start[0] - other[0]) <= _START_TRY_SPACING and abs(start[1] - other[1]) <= _START_TRY_SPACING
                for other in taken
            )
            if not near:
                taken.append(start)
            if len(taken) == _START_TRIES:
                break
        return taken

    def run(self) -> np.ndarray:
        s = self.state
        count = len(s.frames)
        self.track()
        with self._without_edge_tracks():  # the start pair's pose from points, not edges
            starts = self._start_pairs(_START_OVERLAP)
            if not starts:  # perhaps a slow walk rather than a turn
                starts = self._start_pairs(_SLOW_START_OVERLAP, _SLOW_START_GAP)
            if not starts:  # slower still: less parallax, over the same long pairs
                starts = self._start_pairs(_SLOW_START_OVERLAP, _SLOW_START_GAP, _SLOW_START_PARALLAX_DEG)
        if not starts or not self._map(*starts[0]):
            # never any usable parallax: a camera turning on the spot (a failed `_map` leaves
            # nothing mapped)
            s.w2c[0] = np.eye(4)
            for j in range(1, count):
                self._chain(j, j - 1)
            self._adjust_turns()
            return invert_rigid(np.stack(s.w2c))
        # the best-determined start is not always in the right basin (see _START_TRIES): map
        # from a few more, keep the cameras that explain the most tracks, when the tracks are
        # good enough to judge (_CONSENSUS_FRACTION)
        agreed, counted = self._consensus()
        if agreed < _CONSENSUS_FRACTION * counted:
            return invert_rigid(np.stack(s.w2c))
        best = (agreed, s.w2c, s.points, self.origin)
        for start in self._spread_out(starts)[1:]:
            if self._map(*start):
                agreed = self._consensus()[0]
                if agreed > best[0]:
                    best = (agreed, s.w2c, s.points, self.origin)
        _, s.w2c, s.points, self.origin = best
        return invert_rigid(np.stack(s.w2c))


def adjust_turns(
    w2c: np.ndarray, track_obs: list[list[tuple[int, int]]], normalized: list[np.ndarray], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rotation-only bundle adjustment of a camera that only turns: every track is a direction
    seen by all its frames. Frame-to-frame rotations, chained, add up their small errors (and
    the bias of tracks that lag behind the motion); long tracks hold the whole turn.

    w2c: (F, 4, 4) the chained poses (zero translations), frame 0 held fixed; track_obs: per
    track its (frame, keypoint) observations; normalized: per frame its keypoints in
    normalised camera coordinates. Returns the adjusted w2c and the reprojection errors
    (normalised units) of the last solve's observations.
    """
    w2c, errors = np.array(w2c), np.zeros(0)
    tracks = [t for t, obs in enumerate(track_obs) if len(obs) >= 2]
    for _ in range(2):  # solve, drop tracks that do not fit, solve again
        if not tracks:
            break
        obs = [(n, j, k) for n, t in enumerate(tracks) for j, k in track_obs[t]]
        obs_point, obs_cam, _keys = (np.array(v) for v in zip(*obs))
        obs_xy = np.stack([normalized[j][k] for _, j, k in obs])
        world = np.einsum("mji,mj->mi", w2c[obs_cam, :3, :3], _bearings(obs_xy))  # R^T b
        directions = np.zeros((len(tracks), 3))
        np.add.at(directions, obs_point, world)
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        problem = _bundle_adjust.Problem(
            w2c=w2c, free=np.arange(len(w2c)) != 0, points=directions,
            obs_cam=obs_cam, obs_point=obs_point, obs_xy=obs_xy, rotation_only=True,
        )
        errors = _bundle_adjust.solve(problem, threshold, _FINAL_ITERATIONS)
        w2c = problem.w2c
        worst = np.zeros(len(tracks))
        np.maximum.at(worst, obs_point, errors)
        tracks = [t for t, err in zip(tracks, worst) if err <= _OUTLIER_FACTOR * threshold]
    return w2c, errors


@contextlib.contextmanager
def _seeded_opencv():
    """OpenCV's RANSAC draws from its global generator, and its parallel loops split work by
    the thread count: seed one and fix the other so every run and machine sees the same draws."""
    threads = cv2.getNumThreads()
    cv2.setRNGSeed(0)
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


def opencv_poses(frames: np.ndarray, intrinsics: np.ndarray, config: PoseEstimationConfig) -> np.ndarray:
    """Camera-to-world poses (F, 4, 4) of `frames` with per-frame `intrinsics` (F, 4)."""
    with _seeded_opencv():
        c2w = _SequentialSfM(frames, intrinsics, config).run()
    return invert_rigid(c2w[0]) @ c2w


def opencv_tracks(
    frames: np.ndarray, intrinsics: np.ndarray, config: PoseEstimationConfig
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The verified tracks of step 1 alone: per frame its keypoints (K, 2), in pixels with
    pixel centres at integer coordinates (OpenCV's convention), and their track ids (K,),
    -1 for a keypoint seen in no other frame."""
    with _seeded_opencv():
        sfm = _SequentialSfM(frames, intrinsics, config)
        sfm.track()
    return [f.keypoints for f in sfm.state.frames], [f.track for f in sfm.state.frames]
