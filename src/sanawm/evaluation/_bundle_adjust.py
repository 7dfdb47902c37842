"""A small Levenberg-Marquardt bundle adjuster (numpy) for the OpenCV pose backend.

Minimises the Cauchy-robust reprojection error, in normalised camera coordinates, over the
free camera poses and all points; cameras marked fixed still constrain the points (that is
what holds the gauge and the scale in a sliding-window adjustment). The normal equations
are reduced to the cameras with the Schur complement, which stays small because only a few
recent cameras are free.

Pose update: w2c rotation R <- exp([d_theta]x) R, translation t <- t + d_t. A camera that only
turns (all translations zero) sees points as directions: `rotation_only` keeps t fixed, and a
point's distance is then free (its damped step along the ray stays negligible).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Problem:
    """A bundle adjustment problem; arrays are updated in place by `solve`.

    w2c: (P, 4, 4) world-to-camera poses; free: (P,) which of them may move.
    points: (N, 3) world points.
    obs_cam, obs_point: (M,) camera and point index of each observation; obs_xy: (M, 2)
    the observed normalised image coordinates.
    """

    w2c: np.ndarray
    free: np.ndarray
    points: np.ndarray
    obs_cam: np.ndarray
    obs_point: np.ndarray
    obs_xy: np.ndarray
    rotation_only: bool = False  # cameras only turn (translations stay as given)
    obs_whiten: np.ndarray | None = None  # (M, 2, 2) per observation: its residual r counts as
    # obs_whiten @ r (cost, loss and returned errors alike); None counts every direction alike


def _skew(v: np.ndarray) -> np.ndarray:
    out = np.zeros(v.shape[:-1] + (3, 3))
    out[..., 0, 1], out[..., 0, 2] = -v[..., 2], v[..., 1]
    out[..., 1, 0], out[..., 1, 2] = v[..., 2], -v[..., 0]
    out[..., 2, 0], out[..., 2, 1] = -v[..., 1], v[..., 0]
    return out


def _exp_so3(omega: np.ndarray) -> np.ndarray:
    """Rodrigues' formula, batched over (..., 3)."""
    angle = np.linalg.norm(omega, axis=-1)[..., None, None]
    k = _skew(omega)
    small = angle < 1e-12
    safe = np.where(small, 1.0, angle)
    a = np.where(small, 1.0, np.sin(safe) / safe)
    b = np.where(small, 0.5, (1.0 - np.cos(safe)) / safe**2)
    return np.eye(3) + a * k + b * (k @ k)


def _scatter_sum(index: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Sum rows of `values` (M, ...) into `size` bins by `index` (M,); much faster than np.add.at."""
    out = np.zeros((size,) + values.shape[1:])
    if len(index) == 0:
        return out
    order = np.argsort(index, kind="stable")
    sorted_index = index[order]
    starts = np.flatnonzero(np.r_[True, sorted_index[1:] != sorted_index[:-1]])
    out[sorted_index[starts]] = np.add.reduceat(values[order], starts, axis=0)
    return out


def _residuals(w2c, points, p: Problem):
    cam = np.einsum("mij,mj->mi", w2c[p.obs_cam, :3, :3], points[p.obs_point]) + w2c[p.obs_cam, :3, 3]
    z = np.maximum(cam[:, 2], 1e-6)
    r = cam[:, :2] / z[:, None] - p.obs_xy
    return cam, z, r if p.obs_whiten is None else np.einsum("mij,mj->mi", p.obs_whiten, r)


def _cauchy_cost(r: np.ndarray, delta: float) -> float:
    """Sum of delta^2 / 2 * log(1 + (|r| / delta)^2). Unlike Huber's, its influence falls off
    past delta: tracks that slide along outlines (a third of a grass-and-sky terrain walk's,
    several pixels off the true cameras) pull far less. On the 32 ground-truth clips of
    scripts/eval_poses.py it took the clips within 0.3 / 0.8 deg from 26 to 27 (sharp) and 25 to
    28 (blurred)."""
    s = np.linalg.norm(r, axis=1)
    return float((0.5 * delta**2 * np.log1p((s / delta) ** 2)).sum())


def _point_pairs(obs_point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs (o1, o2) of observations that see the same point."""
    order = np.argsort(obs_point, kind="stable")
    pts = obs_point[order]
    starts = np.flatnonzero(np.r_[True, pts[1:] != pts[:-1]])
    counts = np.diff(np.r_[starts, len(order)])
    first, second = [], []
    for start, count in zip(starts, counts):
        block = order[start : start + count]
        first.append(np.repeat(block, count))
        second.append(np.tile(block, count))
    if not first:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    return np.concatenate(first), np.concatenate(second)


_CHUNK_BYTES = 64 << 20  # working memory of one chunk of the Schur complement
_PAIR_OVERHEAD = 10  # numpy cost of one observation pair (gathers, sort) in multiply-adds of the dense way


class _SchurTerm:
    """The sum over points of E_p C_p^-1 E_p^T, (6 F, 6 F) for F free cameras.

    Two exact ways: over the pairs of observations of each point (cost grows with the sum of
    squared track lengths) or with a dense camera-by-point matrix (cost grows with F^2 times
    the point count). The cheaper one for the problem's structure is used, in chunks of
    bounded memory: the result never depends on time or on a size budget.
    """

    def __init__(self, obs_point: np.ndarray, obs_cam_free: np.ndarray, num_free: int, num_points: int):
        self.obs_point, self.obs_cam, self.num_free, self.num_points = obs_point, obs_cam_free, num_free, num_points
        views = np.bincount(obs_point, minlength=num_points)
        pair_cost = _PAIR_OVERHEAD * 108 * int((views**2).sum())
        dense_cost = (6 * num_free) ** 2 * 3 * num_points
        self.pairs = _point_pairs(obs_point) if pair_cost < dense_cost else None

    def __call__(self, e_obs: np.ndarray, c_inv: np.ndarray) -> np.ndarray:
        """`e_obs` (M, 6, 3) per observation of a free camera, `c_inv` (N, 3, 3) per point."""
        f = self.num_free
        if self.pairs is not None:
            pair_a, pair_b = self.pairs
            weighted = e_obs @ c_inv[self.obs_point]  # E_o C^-1 per observation, reused by every pair
            out = np.zeros((f * f, 6, 6))
            step = max(1, _CHUNK_BYTES // 400)
            for start in range(0, len(pair_a), step):
                a, b = pair_a[start : start + step], pair_b[start : start + step]
                blocks = weighted[a] @ np.swapaxes(e_obs[b], 1, 2)
                out += _scatter_sum(self.obs_cam[a] * f + self.obs_cam[b], blocks, f * f)
            return out.reshape(f, f, 6, 6).transpose(0, 2, 1, 3).reshape(6 * f, 6 * f)
        out = np.zeros((6 * f, 6 * f))
        step = max(1, _CHUNK_BYTES // (f * 6 * 3 * 8 * 2))
        order = np.argsort(self.obs_point, kind="stable")
        bounds = np.searchsorted(self.obs_point[order], np.arange(0, self.num_points + step, step))
        for chunk, start in enumerate(range(0, self.num_points, step)):
            sel = order[bounds[chunk] : bounds[chunk + 1]]
            count = min(step, self.num_points - start)
            w = np.zeros((f, count, 6, 3))
            np.add.at(w, (self.obs_cam[sel], self.obs_point[sel] - start), e_obs[sel])
            wc = w @ c_inv[start : start + count]
            left = wc.transpose(0, 2, 1, 3).reshape(6 * f, 3 * count)
            out += left @ w.transpose(0, 2, 1, 3).reshape(6 * f, 3 * count).T
        return out


_STALL_STEPS = 5  # LM stops once its last _STALL_STEPS accepted steps lowered the cost by less than
_STALL_FRACTION = 1e-4  # this fraction of it. Without it the closing adjustment of a forward walk
# ran to its 100-iteration cap on many clips of scripts/eval_poses.py, lowering the cost by
# millionths per step (2.2x the time of the whole estimate over the four ground-truth sets); the
# anti-aliased blurred terrain walk 27, which needs its long crawl along the rotation-translation
# valley, stops after 53 steps instead of 58 at the same poses (0.851 / 2.003 deg)


def solve(p: Problem, delta: float, iterations: int = 5) -> np.ndarray:
    """Run LM on `p` (in place) and return the final residual norm of every observation. It stops
    after `iterations` steps, when no damping finds a step that lowers the cost, or when the
    cost stalls (`_STALL_FRACTION`)."""
    free_index = np.cumsum(p.free) - 1  # camera -> row block among the free cameras
    num_free, num_points = int(p.free.sum()), len(p.points)
    obs_free = p.free[p.obs_cam]
    fo = np.flatnonzero(obs_free)  # observations by free cameras
    fo_cam = free_index[p.obs_cam[fo]]
    schur = _SchurTerm(p.obs_point[fo], fo_cam, num_free, num_points)
    lam = 1e-4
    _, _, r = _residuals(p.w2c, p.points, p)
    cost = _cauchy_cost(r, delta)
    costs = [cost]  # after each accepted step
    for _ in range(iterations):
        if len(costs) > _STALL_STEPS and costs[-_STALL_STEPS - 1] - cost < _STALL_FRACTION * cost:
            break  # the last steps together barely lowered the cost: converged for our purposes
        cam, z, r = _residuals(p.w2c, p.points, p)
        norm = np.linalg.norm(r, axis=1)
        w = 1.0 / (1.0 + (norm / delta) ** 2)  # Cauchy IRLS weights
        w = np.where(cam[:, 2] > 1e-6, w, 0.0)
        jp = np.zeros((len(z), 2, 3))
        jp[:, 0, 0] = jp[:, 1, 1] = 1.0 / z
        jp[:, 0, 2] = -cam[:, 0] / z**2
        jp[:, 1, 2] = -cam[:, 1] / z**2
        if p.obs_whiten is not None:
            jp = p.obs_whiten @ jp
        rotated = cam - p.w2c[p.obs_cam, :3, 3]
        jc = np.concatenate([jp @ -_skew(rotated), jp], axis=2)  # (M, 2, 6) wrt (d_theta, d_t)
        if p.rotation_only:  # no gradient along d_t: its (damped) step is exactly zero
            jc[:, :, 3:] = 0.0
        jx = jp @ p.w2c[p.obs_cam, :3, :3]  # (M, 2, 3)

        wjc, wjx = w[:, None, None] * jc, w[:, None, None] * jx
        c_blocks = _scatter_sum(p.obs_point, np.einsum("mki,mkj->mij", wjx, jx), num_points)
        g_x = _scatter_sum(p.obs_point, -np.einsum("mki,mk->mi", wjx, r), num_points)
        b_blocks = _scatter_sum(fo_cam, np.einsum("mki,mkj->mij", wjc[fo], jc[fo]), num_free)
        g_c = _scatter_sum(fo_cam, -np.einsum("mki,mk->mi", wjc[fo], r[fo]), num_free)
        e_obs = np.einsum("mki,mkj->mij", wjc[fo], jx[fo])  # (free observations, 6, 3)

        for _attempt in range(6):
            c_damped = c_blocks + (lam * np.einsum("nii->ni", c_blocks) + 1e-12)[:, :, None] * np.eye(3)
            c_inv = np.linalg.inv(c_damped)
            # reduced camera system S d_cam = rhs, S = B - E C^-1 E^T, blocks (num_free, num_free, 6, 6)
            b_damped = b_blocks + (lam * np.einsum("nii->ni", b_blocks) + 1e-12)[:, :, None] * np.eye(6)
            s = np.zeros((num_free, 6, num_free, 6))
            s[np.arange(num_free), :, np.arange(num_free), :] = b_damped
            s = s.reshape(num_free * 6, num_free * 6)
            rhs = g_c.copy()
            if len(fo):
                s -= schur(e_obs, c_inv)
                ec = np.einsum("mij,mjk,mk->mi", e_obs, c_inv[p.obs_point[fo]], g_x[p.obs_point[fo]])
                rhs -= _scatter_sum(fo_cam, ec, num_free)
            d_cam = np.linalg.solve(s, rhs.reshape(-1)).reshape(num_free, 6) if num_free else np.zeros((0, 6))
            back = g_x.copy()
            if len(fo):
                back -= _scatter_sum(p.obs_point[fo], np.einsum("mji,mj->mi", e_obs, d_cam[fo_cam]), num_points)
            d_pts = np.einsum("nij,nj->ni", c_inv, back)

            new_w2c = p.w2c.copy()
            free_ids = np.flatnonzero(p.free)
            new_w2c[free_ids, :3, :3] = _exp_so3(d_cam[:, :3]) @ p.w2c[free_ids, :3, :3]
            new_w2c[free_ids, :3, 3] += d_cam[:, 3:]
            new_points = p.points + d_pts
            _, _, new_r = _residuals(new_w2c, new_points, p)
            new_cost = _cauchy_cost(new_r, delta)
            if new_cost < cost:
                p.w2c[:], p.points[:] = new_w2c, new_points
                cost, lam = new_cost, max(lam / 3.0, 1e-8)
                costs.append(cost)
                break
            lam *= 5.0
        else:
            break  # no step reduced the cost: converged (or stuck)
    _, _, r = _residuals(p.w2c, p.points, p)
    return np.linalg.norm(r, axis=1)
