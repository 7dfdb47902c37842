"""A small Levenberg-Marquardt bundle adjuster (numpy) for the OpenCV pose backend.

Minimises the Huber-robust reprojection error, in normalised camera coordinates, over the
free camera poses and all points; cameras marked fixed still constrain the points (that is
what holds the gauge and the scale in a sliding-window adjustment). The normal equations
are reduced to the cameras with the Schur complement, which stays small because only a few
recent cameras are free.

Pose update: w2c rotation R <- exp([d_theta]x) R, translation t <- t + d_t.
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
    return cam, z, cam[:, :2] / z[:, None] - p.obs_xy


def _huber_cost(r: np.ndarray, delta: float) -> float:
    s = np.linalg.norm(r, axis=1)
    return float(np.where(s <= delta, 0.5 * s**2, delta * (s - 0.5 * delta)).sum())


def _point_pairs(obs_point: np.ndarray, use: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs (o1, o2) of observations in `use` that see the same point."""
    idx = np.flatnonzero(use)
    order = idx[np.argsort(obs_point[idx], kind="stable")]
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


def solve(p: Problem, delta: float, iterations: int = 5) -> np.ndarray:
    """Run LM on `p` (in place) and return the final residual norm of every observation."""
    free_index = np.cumsum(p.free) - 1  # camera -> row block among the free cameras
    num_free, num_points = int(p.free.sum()), len(p.points)
    obs_free = p.free[p.obs_cam]
    pair_a, pair_b = _point_pairs(p.obs_point, obs_free)
    lam = 1e-4
    _, _, r = _residuals(p.w2c, p.points, p)
    cost = _huber_cost(r, delta)
    for _ in range(iterations):
        cam, z, r = _residuals(p.w2c, p.points, p)
        norm = np.linalg.norm(r, axis=1)
        w = np.where(norm <= delta, 1.0, delta / np.maximum(norm, 1e-300))  # Huber IRLS weights
        w = np.where(cam[:, 2] > 1e-6, w, 0.0)
        jp = np.zeros((len(z), 2, 3))
        jp[:, 0, 0] = jp[:, 1, 1] = 1.0 / z
        jp[:, 0, 2] = -cam[:, 0] / z**2
        jp[:, 1, 2] = -cam[:, 1] / z**2
        rotated = cam - p.w2c[p.obs_cam, :3, 3]
        jc = np.concatenate([jp @ -_skew(rotated), jp], axis=2)  # (M, 2, 6) wrt (d_theta, d_t)
        jx = jp @ p.w2c[p.obs_cam, :3, :3]  # (M, 2, 3)

        wjc, wjx = w[:, None, None] * jc, w[:, None, None] * jx
        c_blocks = _scatter_sum(p.obs_point, np.einsum("mki,mkj->mij", wjx, jx), num_points)
        g_x = _scatter_sum(p.obs_point, -np.einsum("mki,mk->mi", wjx, r), num_points)
        fo = np.flatnonzero(obs_free)
        fo_cam = free_index[p.obs_cam[fo]]
        b_blocks = _scatter_sum(fo_cam, np.einsum("mki,mkj->mij", wjc[fo], jc[fo]), num_free)
        g_c = _scatter_sum(fo_cam, -np.einsum("mki,mk->mi", wjc[fo], r[fo]), num_free)
        e_obs = np.zeros((len(z), 6, 3))
        e_obs[fo] = np.einsum("mki,mkj->mij", wjc[fo], jx[fo])

        for _attempt in range(6):
            c_damped = c_blocks + (lam * np.einsum("nii->ni", c_blocks) + 1e-12)[:, :, None] * np.eye(3)
            c_inv = np.linalg.inv(c_damped)
            # reduced camera system S d_cam = rhs, S = B - E C^-1 E^T, blocks (num_free, num_free, 6, 6)
            b_damped = b_blocks + (lam * np.einsum("nii->ni", b_blocks) + 1e-12)[:, :, None] * np.eye(6)
            s = np.zeros((num_free, num_free, 6, 6))
            s[np.arange(num_free), np.arange(num_free)] = b_damped
            if len(pair_a):
                weighted = e_obs @ c_inv[p.obs_point]  # E_o C^-1 per observation, reused by every pair
                blocks = weighted[pair_a] @ np.swapaxes(e_obs[pair_b], 1, 2)
                cell = free_index[p.obs_cam[pair_a]] * num_free + free_index[p.obs_cam[pair_b]]
                s -= _scatter_sum(cell, blocks, num_free * num_free).reshape(num_free, num_free, 6, 6)
            rhs = g_c.copy()
            if len(fo):
                ec = np.einsum("mij,mjk,mk->mi", e_obs[fo], c_inv[p.obs_point[fo]], g_x[p.obs_point[fo]])
                rhs -= _scatter_sum(fo_cam, ec, num_free)
            s = s.transpose(0, 2, 1, 3).reshape(num_free * 6, num_free * 6)
            d_cam = np.linalg.solve(s, rhs.reshape(-1)).reshape(num_free, 6) if num_free else np.zeros((0, 6))
            back = g_x.copy()
            if len(fo):
                back -= _scatter_sum(p.obs_point[fo], np.einsum("mji,mj->mi", e_obs[fo], d_cam[fo_cam]), num_points)
            d_pts = np.einsum("nij,nj->ni", c_inv, back)

            new_w2c = p.w2c.copy()
            free_ids = np.flatnonzero(p.free)
            new_w2c[free_ids, :3, :3] = _exp_so3(d_cam[:, :3]) @ p.w2c[free_ids, :3, :3]
            new_w2c[free_ids, :3, 3] += d_cam[:, 3:]
            new_points = p.points + d_pts
            _, _, new_r = _residuals(new_w2c, new_points, p)
            new_cost = _huber_cost(new_r, delta)
            if new_cost < cost:
                p.w2c[:], p.points[:] = new_w2c, new_points
                cost, lam = new_cost, max(lam / 3.0, 1e-8)
                break
            lam *= 5.0
        else:
            break  # no step reduced the cost: converged (or stuck)
    _, _, r = _residuals(p.w2c, p.points, p)
    return np.linalg.norm(r, axis=1)
