"""Sequential structure-from-motion on OpenCV: the pose backend that needs no pycolmap.

Pipeline, one frame at a time:
1. SIFT keypoints; matches to the previous frame (ratio test, mutual check) verified by an
   essential-matrix RANSAC. Matches chain keypoints into tracks.
2. Start: wait for a frame with enough rotation-compensated parallax to the anchor frame
   (frame 0 at first), then take its pose from the essential matrix (baseline 1) and
   triangulate the shared tracks. Frames in between are registered by PnP afterwards. If the
   anchor's tracks die out before there is parallax (the clip opens with the camera turning
   on the spot), those frames get rotation-only poses and the anchor moves on.
3. Then each frame is registered by PnP (RANSAC + Levenberg-Marquardt) against tracks that
   already have 3D points, so every translation is measured in the scale of the first
   baseline; new tracks are triangulated once their viewing rays are far enough apart.
4. When PnP has too few points (the camera turned away from everything mapped), the frame is
   chained to the previous one by its essential matrix (or by a pure rotation when there is
   no parallax), its step length borrowed from the recent motion, and mapping continues.

Everything inside works in normalised camera coordinates; pixel thresholds are converted with
the mean focal length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from sanawm.evaluation import _bundle_adjust
from sanawm.evaluation.geometry import invert_rigid
from sanawm.evaluation.pose_estimation import PoseEstimationConfig, PoseEstimationError

log = logging.getLogger(__name__)

_RATIO = 0.8  # Lowe's ratio test
_MIN_PARALLAX_DEG = 1.5  # rotation-compensated median parallax that counts as a baseline
_MIN_TRIANGULATION_DEG = 1.0  # smallest angle between viewing rays for a new 3D point
_MIN_PNP_POINTS = 15
_MIN_PNP_INLIER_RATIO = 0.4
_RECENT_STEPS = 5  # steps averaged for the step length of a chained frame
_WINDOW = 6  # most recent cameras refined by each local bundle adjustment
_BA_ITERATIONS = 3
_OUTLIER_FACTOR = 4.0  # points whose reprojection error exceeds this x threshold are dropped


@dataclass
class _FrameData:
    keypoints: np.ndarray  # (N, 2) pixels
    normalized: np.ndarray  # (N, 2) x/z, y/z in camera coordinates
    descriptors: np.ndarray  # (N, 128) float32
    track: np.ndarray  # (N,) track id per keypoint, -1 when the keypoint is in no track


@dataclass
class _State:
    frames: list[_FrameData]
    w2c: list[np.ndarray | None]  # (4, 4) world-to-camera per registered frame
    track_obs: list[list[tuple[int, int]]] = field(default_factory=list)  # (frame, keypoint) per track
    points: dict[int, np.ndarray] = field(default_factory=dict)  # track id -> world point
    pair_matches: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # i -> (prev kps, kps)


def _bearings(normalized: np.ndarray) -> np.ndarray:
    b = np.concatenate([normalized, np.ones((len(normalized), 1))], axis=1)
    return b / np.linalg.norm(b, axis=1, keepdims=True)


def _extract(frames: np.ndarray, intrinsics: np.ndarray, config: PoseEstimationConfig) -> list[_FrameData]:
    # a low contrast threshold: generated and rendered textures are soft, and more tracks
    # make forward motion (the hardest case for monocular SfM) much better conditioned
    sift = cv2.SIFT_create(nfeatures=config.max_features, contrastThreshold=0.02)
    out = []
    for i, (frame, (fx, fy, cx, cy)) in enumerate(zip(frames, intrinsics)):
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.shape[-1] == 3 else frame[..., 0]
        keypoints, descriptors = sift.detectAndCompute(gray, None)
        if descriptors is None or len(keypoints) < config.min_matches:
            raise PoseEstimationError(
                f"frame {i}: only {len(keypoints)} features found (need {config.min_matches}); "
                "the frame is too flat, dark or blurry to track"
            )
        pixels = np.array([kp.pt for kp in keypoints], dtype=np.float64)
        normalized = np.stack([(pixels[:, 0] - cx) / fx, (pixels[:, 1] - cy) / fy], axis=1)
        out.append(_FrameData(pixels, normalized, descriptors.astype(np.float32), np.full(len(pixels), -1)))
    return out


def _match(a: _FrameData, b: _FrameData) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours passing the ratio test: keypoint indices in a and in b.

    Brute force as one matrix product in torch: far faster than OpenCV's matcher for the
    few thousand descriptors per frame we use.
    """
    da, db = torch.from_numpy(a.descriptors), torch.from_numpy(b.descriptors)
    dist2 = (da.square().sum(1)[:, None] + db.square().sum(1)[None, :] - 2.0 * da @ db.T).clamp_min(0)
    best2, nearest = dist2.topk(2, dim=1, largest=False)
    back = dist2.argmin(dim=0)
    ia = torch.arange(len(da))
    keep = (best2[:, 0] < _RATIO**2 * best2[:, 1]) & (back[nearest[:, 0]] == ia)
    return ia[keep].numpy(), nearest[keep, 0].numpy()


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


def _rotation_only(xa: np.ndarray, xb: np.ndarray, threshold: float, rng: np.random.Generator) -> np.ndarray:
    """Rotation R with b_b = R b_a from bearing pairs: 2-point RANSAC, then Kabsch on inliers."""
    ba, bb = _bearings(xa), _bearings(xb)

    def kabsch(p, q):
        u, _, vt = np.linalg.svd(q.T @ p)
        d = np.sign(np.linalg.det(u @ vt)) or 1.0
        return u @ np.diag([1.0, 1.0, d]) @ vt

    best, best_count = np.eye(3), -1
    for _ in range(200):
        pick = rng.choice(len(ba), size=2, replace=False)
        r = kabsch(ba[pick], bb[pick])
        inliers = np.linalg.norm(ba @ r.T - bb, axis=1) < threshold
        if inliers.sum() > best_count:
            best, best_count = r, int(inliers.sum())
    inliers = np.linalg.norm(ba @ best.T - bb, axis=1) < threshold
    return kabsch(ba[inliers], bb[inliers]) if inliers.sum() >= 3 else best


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
        self.state = _State(frames=_extract(frames, intrinsics, config), w2c=[None] * len(frames))

    # ---- tracks -------------------------------------------------------------------------
    def _link(self, i: int) -> None:
        """Match frame i to i-1, keep geometrically consistent matches, extend the tracks."""
        s = self.state
        prev, cur = s.frames[i - 1], s.frames[i]
        ia, ib = _match(prev, cur)
        if len(ia) >= 8:
            _, mask = _essential(prev.normalized[ia], cur.normalized[ib], self.threshold)
            if mask is not None:
                ia, ib = ia[mask], ib[mask]
        if len(ia) < self.config.min_matches:
            raise PoseEstimationError(
                f"only {len(ia)} consistent feature matches between frames {i - 1} and {i} "
                f"(need {self.config.min_matches}); the video may cut, flash or lose texture there"
            )
        for ka, kb in zip(ia, ib):
            t = prev.track[ka]
            if t < 0:
                t = len(s.track_obs)
                s.track_obs.append([(i - 1, int(ka))])
                prev.track[ka] = t
            s.track_obs[t].append((i, int(kb)))
            cur.track[kb] = t
        s.pair_matches[i] = (ia, ib)

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
    def _turn_only(self, xa: np.ndarray, xb: np.ndarray) -> np.ndarray | None:
        """The rotation relating two views when a pure turn explains them, else None."""
        rotation = _rotation_only(xa, xb, self.threshold, self.rng)
        return rotation if _parallax_deg(xa, xb, rotation) < _MIN_PARALLAX_DEG else None

    def _pnp(self, i: int) -> bool:
        s = self.state
        frame = s.frames[i]
        keys = [k for k, t in enumerate(frame.track) if t in s.points]
        if len(keys) < _MIN_PNP_POINTS:
            return False
        obj = np.array([s.points[frame.track[k]] for k in keys])
        img = frame.normalized[keys]
        guess = s.w2c[i - 1] if s.w2c[i - 1] is not None else np.eye(4)
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

    def _recent_step(self, i: int) -> float:
        """Typical camera-centre step over the last registered frames (1 if none moved)."""
        centres = [invert_rigid(p)[:3, 3] for p in self.state.w2c[:i] if p is not None]
        steps = np.linalg.norm(np.diff(np.array(centres), axis=0), axis=1) if len(centres) > 1 else np.zeros(0)
        moving = steps[steps > 1e-9]
        return float(moving[-_RECENT_STEPS:].mean()) if len(moving) else 1.0

    def _chain(self, i: int) -> None:
        """Register frame i from its matches to frame i-1 alone (no usable 3D points)."""
        s = self.state
        ia, ib = s.pair_matches[i]
        xa, xb = s.frames[i - 1].normalized[ia], s.frames[i].normalized[ib]
        relative = np.eye(4)
        turn = self._turn_only(xa, xb)
        e, mask = (None, None) if turn is not None else _essential(xa, xb, self.threshold)
        if e is not None and mask.sum() >= self.config.min_matches:
            r, t, good = _relative_pose(xa, xb, e, mask)
            relative[:3, :3], relative[:3, 3] = r, t * self._recent_step(i)
        else:
            relative[:3, :3] = turn if turn is not None else _rotation_only(xa, xb, self.threshold, self.rng)
        s.w2c[i] = relative @ s.w2c[i - 1]

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

    def _adjust(self, i: int) -> None:
        """Local bundle adjustment of the last `_WINDOW` registered cameras up to frame i."""
        s = self.state
        registered = [j for j in range(i + 1) if s.w2c[j] is not None]
        free = set(registered[-_WINDOW:]) - {0}  # frame 0 stays the identity
        seen = set(np.concatenate([s.frames[j].track for j in free]).tolist()) if free else set()
        tracks = sorted(seen & s.points.keys())
        if not tracks or not free:
            return
        cams: dict[int, int] = {}
        obs_cam, obs_point, obs_xy = [], [], []
        for n, t in enumerate(tracks):
            for j, k in s.track_obs[t]:
                if j <= i and s.w2c[j] is not None:
                    obs_cam.append(cams.setdefault(j, len(cams)))
                    obs_point.append(n)
                    obs_xy.append(s.frames[j].normalized[k])
        frames = list(cams)
        problem = _bundle_adjust.Problem(
            w2c=np.stack([s.w2c[j] for j in frames]),
            free=np.array([j in free for j in frames]),
            points=np.stack([s.points[t] for t in tracks]),
            obs_cam=np.array(obs_cam),
            obs_point=np.array(obs_point),
            obs_xy=np.array(obs_xy),
        )
        errors = _bundle_adjust.solve(problem, self.threshold, _BA_ITERATIONS)
        for j, pose in zip(frames, problem.w2c):
            s.w2c[j] = pose
        worst = np.zeros(len(tracks))
        np.maximum.at(worst, problem.obs_point, errors)
        for t, point, err in zip(tracks, problem.points, worst):
            if err > _OUTLIER_FACTOR * self.threshold:
                del s.points[t]
            else:
                s.points[t] = point

    def _start(self, anchor: int, i: int) -> bool:
        """Try to make the map from frames `anchor` and i; True when it exists afterwards."""
        s = self.state
        ka, kb = self._shared(anchor, i)
        xa, xb = s.frames[anchor].normalized[ka], s.frames[i].normalized[kb]
        if len(xa) < self.config.min_matches or self._turn_only(xa, xb) is not None:
            return False
        e, mask = _essential(xa, xb, self.threshold)
        if e is None or mask.sum() < self.config.min_matches:
            return False
        r, t, good = _relative_pose(xa, xb, e, mask)
        if good.sum() < self.config.min_matches:
            return False
        relative = np.eye(4)
        relative[:3, :3], relative[:3, 3] = r, t
        s.w2c[i] = relative @ s.w2c[anchor]
        if self._add_points(i) < _MIN_PNP_POINTS:
            s.w2c[i] = None
            s.points.clear()
            return False
        return True

    def run(self) -> np.ndarray:
        s = self.state
        count = len(s.frames)
        s.w2c[0] = np.eye(4)
        anchor, mapped = 0, False
        for i in range(1, count):
            self._link(i)
            if mapped:
                if not self._pnp(i):
                    log.debug("frame %d: PnP failed, chaining from frame %d", i, i - 1)
                    self._chain(i)
                self._add_points(i)
                self._adjust(i)
                continue
            if self._start(anchor, i):
                mapped = True
                for j in range(anchor + 1, i):
                    if not self._pnp(j):
                        self._chain(j)
                for j in range(anchor + 1, i + 1):
                    self._add_points(j)
                self._adjust(i)
                continue
            if len(self._shared(anchor, i)[0]) < self.config.min_matches:
                # the anchor's view is gone without any parallax: the camera only turned
                for j in range(anchor + 1, i + 1):
                    self._chain(j)
                anchor = i
        if not mapped:  # never any parallax: a camera turning on the spot
            for j in range(anchor + 1, count):
                self._chain(j)
        return invert_rigid(np.stack(s.w2c))


def opencv_poses(frames: np.ndarray, intrinsics: np.ndarray, config: PoseEstimationConfig) -> np.ndarray:
    """Camera-to-world poses (F, 4, 4) of `frames` with per-frame `intrinsics` (F, 4)."""
    c2w = _SequentialSfM(frames, intrinsics, config).run()
    return invert_rigid(c2w[0]) @ c2w
