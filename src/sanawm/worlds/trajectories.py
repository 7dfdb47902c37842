"""Seeded camera trajectories that stay in a world's free space.

Three families, all returning camera-to-world poses ``(F, 4, 4)`` float32 (OpenCV axes,
starting at the origin, which every generated world keeps free):

* `random_action_walk`: a random action-language string (walks, strafes, turns, pitch, pauses),
  steered so that the camera keeps ``margin`` metres from every surface, and its exact rollout
  by `sanawm.camera.action_to_c2w`.
* `random_spline_trajectory`: a smooth centripetal Catmull-Rom path through random free
  control points, walked at constant speed, looking a little ahead along the path.
* `loop_trajectory`: a closed smooth loop; the last pose equals the first, so the camera
  revisits everything it saw (for consistency / memory tests).

Every function takes a ``seed`` and is deterministic for a given world, seed and arguments.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch

from sanawm.camera import action_to_c2w
from sanawm.errors import UserInputError
from sanawm.worlds.scene import World

DEFAULT_MARGIN = 0.3  # metres between the camera centre and any surface

# Action-walk segment menu: (keys, relative weight, (min, max) frames).
_SEGMENTS = (
    ("w", 0.28, (10, 40)),
    ("wj", 0.08, (8, 40)),
    ("wl", 0.08, (8, 40)),
    ("j", 0.06, (10, 60)),
    ("l", 0.06, (10, 60)),
    ("a", 0.04, (6, 25)),
    ("d", 0.04, (6, 25)),
    ("wa", 0.03, (6, 25)),
    ("wd", 0.03, (6, 25)),
    ("s", 0.04, (5, 15)),
    ("i", 0.05, (4, 15)),
    ("k", 0.05, (4, 15)),
    ("wi", 0.02, (4, 12)),
    ("wk", 0.02, (4, 12)),
    ("none", 0.04, (3, 12)),
)
_MAX_PITCH_DEG = 20.0  # walks keep the horizon in view
_TRIES_PER_SEGMENT = 12
_CANDIDATES = 3  # collision-free segments compared by the view they end with
_GOOD_VIEW = 6.0  # metres; views at least this open count as equally good


def _check_common(world: World, num_frames: int, margin: float) -> None:
    if not isinstance(world, World):
        raise UserInputError(f"world must be a sanawm.worlds.World, got {type(world).__name__}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 2:
        raise UserInputError(f"num_frames must be an integer >= 2, got {num_frames!r}")
    if not (isinstance(margin, (int, float)) and 0 <= margin < 1.0):
        raise UserInputError(f"margin must be a number of metres in [0, 1), got {margin!r}")


def _rng(world: World, seed: int, family: int) -> np.random.Generator:
    """Generator for one trajectory family; mixes in the world so that one trajectory seed
    gives different paths in different worlds."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserInputError(f"trajectory seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng([int(seed), world.seed, zlib.crc32(world.kind.encode()), family])


def _free(world: World, points: np.ndarray, margin: float) -> bool:
    return bool(world.is_free(torch.as_tensor(points, dtype=torch.float32).reshape(-1, 3), margin).all())


def trajectory_clearance(world: World, c2w: torch.Tensor, substeps: int = 4) -> float:
    """Smallest distance from the camera centre to any surface along a path (F, 4, 4).

    Positions are checked at the poses and ``substeps - 1`` points between consecutive ones.
    """
    centres = torch.as_tensor(c2w, dtype=torch.float32)[:, :3, 3]
    if len(centres) > 1 and substeps > 1:
        w = torch.linspace(0, 1, substeps + 1)[:-1, None, None]
        between = (1 - w) * centres[None, :-1] + w * centres[None, 1:]
        centres = torch.cat([between.reshape(-1, 3), centres[-1:]])
    return float(world.free_space_distance(centres).min())


# --------------------------------------------------------------------------------------------
# Action-language walks
# --------------------------------------------------------------------------------------------


def _view_distance(world: World, position: np.ndarray, yaw: float) -> float:
    """Distance to the first surface straight ahead of a level camera at ``position`` facing ``yaw``."""
    direction = torch.tensor([[math.sin(yaw), 0.0, math.cos(yaw)]])
    return float(world.ray_distance(torch.as_tensor(position, dtype=torch.float32)[None], direction))


def _walk_positions(x: float, z: float, yaw_steps: int, keys: str, frames: int, step_rad: float,
                    speed: float) -> tuple[np.ndarray, int]:
    """Planning model of the action language: camera centres (frames, 3) after each frame of
    holding ``keys``, and the final yaw step count. Pitch does not move the camera (walking
    uses the ground-projected forward vector), so only yaw and the move keys matter here."""
    held = set(keys) if keys != "none" else set()
    turn = ("l" in held) - ("j" in held)
    yaw = (yaw_steps + turn * np.arange(1, frames + 1)) * step_rad  # orientation after each step
    ahead, side = ("w" in held) - ("s" in held), ("d" in held) - ("a" in held)
    dx = speed * (ahead * np.sin(yaw) + side * np.cos(yaw))
    dz = speed * (ahead * np.cos(yaw) - side * np.sin(yaw))
    points = np.stack([x + np.cumsum(dx), np.zeros(frames), z + np.cumsum(dz)], axis=-1)
    return points, yaw_steps + turn * frames


def random_action_walk(
    world: World,
    num_frames: int,
    seed: int,
    *,
    translation_speed: float = 0.05,
    rotation_speed_deg: float = 1.2,
    margin: float = DEFAULT_MARGIN,
) -> tuple[str, torch.Tensor]:
    """A random action string of ``num_frames - 1`` frames and its rollout ``(num_frames, 4, 4)``.

    Segments are drawn from a menu weighted towards walking and turning; a segment that would
    bring the camera closer than ``margin`` to a surface (or out of the world's walkable
    bounds) is redrawn, turns are favoured when a wall is close ahead, and of a few
    collision-free candidates the one ending with the most open view wins. Turning in place
    is always possible, so generation never fails. Pitch stays within +-20 degrees.
    """
    _check_common(world, num_frames, margin)
    if not (translation_speed > 0 and rotation_speed_deg > 0):
        raise UserInputError("translation_speed and rotation_speed_deg must be positive")
    rng = _rng(world, seed, 11)
    step_rad = math.radians(rotation_speed_deg)
    max_pitch = int(_MAX_PITCH_DEG // rotation_speed_deg)
    keys_menu = [s[0] for s in _SEGMENTS]
    base_weights = np.array([s[1] for s in _SEGMENTS])

    x = z = 0.0
    yaw_steps = pitch_steps = 0
    remaining = num_frames - 1
    segments: list[str] = []
    while remaining > 0:
        ahead = _view_distance(world, np.array([x, 0.0, z]), yaw_steps * step_rad)
        weights = base_weights.copy()
        if ahead < 3.0:  # close to a wall ahead: mostly turn
            weights[[keys_menu.index(k) for k in ("j", "l", "wj", "wl")]] *= 6.0
        weights /= weights.sum()
        # Draw candidates until a few are collision-free, then keep the one that ends with the
        # most open view ahead (walks look into the scene rather than at a wall 0.4 m away).
        valid = []
        for _ in range(_TRIES_PER_SEGMENT):
            index = int(rng.choice(len(_SEGMENTS), p=weights))
            keys, _, (lo, hi) = _SEGMENTS[index]
            frames = min(int(rng.integers(lo, hi + 1)), remaining)
            pitch_change = (("i" in keys) - ("k" in keys)) * frames
            if abs(pitch_steps + pitch_change) > max_pitch:
                continue
            points, new_yaw = _walk_positions(x, z, yaw_steps, keys, frames, step_rad, translation_speed)
            if not _free(world, points, margin):
                continue
            view = min(_view_distance(world, points[-1], new_yaw * step_rad), _GOOD_VIEW)
            valid.append((view, len(valid), (keys, frames, points[-1], new_yaw, pitch_change)))
            if len(valid) == _CANDIDATES:
                break
        chosen = max(valid)[2] if valid else None
        if chosen is None:  # nothing fits: turn on the spot, which cannot collide
            keys = "l" if rng.uniform() < 0.5 else "j"
            frames = min(int(rng.integers(15, 46)), remaining)
            _, new_yaw = _walk_positions(x, z, yaw_steps, keys, frames, step_rad, translation_speed)
            chosen = keys, frames, np.array([x, 0.0, z]), new_yaw, 0
        keys, frames, end, yaw_steps, pitch_change = chosen
        x, z = float(end[0]), float(end[2])
        pitch_steps += pitch_change
        segments.append(f"{keys}-{frames}")
        remaining -= frames

    action = ",".join(segments)
    c2w = action_to_c2w(action, translation_speed=translation_speed, rotation_speed_deg=rotation_speed_deg)
    return action, c2w


# --------------------------------------------------------------------------------------------
# Smooth paths
# --------------------------------------------------------------------------------------------


def catmull_rom(points: np.ndarray, samples_per_segment: int, closed: bool = False) -> np.ndarray:
    """Centripetal Catmull-Rom curve through ``points`` (K, 3), sampled densely: (N, 3) float64.

    Open curves run from the first to the last point (end tangents from mirrored phantom
    points); closed curves return to the first point, which is also the last sample.
    Centripetal parametrisation (alpha = 1/2) avoids cusps and self-loops.
    """
    pts = np.asarray(points, dtype=np.float64)
    if closed:
        ext = np.concatenate([pts[-1:], pts, pts[:2]])
    else:
        ext = np.concatenate([2 * pts[:1] - pts[1:2], pts, 2 * pts[-1:] - pts[-2:-1]])
    u = np.linspace(0.0, 1.0, samples_per_segment, endpoint=False)[:, None]
    pieces = []
    for i in range(len(ext) - 3):
        p0, p1, p2, p3 = ext[i : i + 4]
        # Knot spacing: square root of the chord length (centripetal), kept away from zero.
        t1 = np.linalg.norm(p1 - p0) ** 0.5 + 1e-9
        t2 = t1 + np.linalg.norm(p2 - p1) ** 0.5 + 1e-9
        t3 = t2 + np.linalg.norm(p3 - p2) ** 0.5 + 1e-9
        t = t1 + u * (t2 - t1)
        # Barry-Goldman pyramid evaluation with knots (0, t1, t2, t3).
        a1 = (t1 - t) / t1 * p0 + t / t1 * p1
        a2 = (t2 - t) / (t2 - t1) * p1 + (t - t1) / (t2 - t1) * p2
        a3 = (t3 - t) / (t3 - t2) * p2 + (t - t2) / (t3 - t2) * p3
        b1 = (t2 - t) / t2 * a1 + t / t2 * a2
        b2 = (t3 - t) / (t3 - t1) * a2 + (t - t1) / (t3 - t1) * a3
        pieces.append((t2 - t) / (t2 - t1) * b1 + (t - t1) / (t2 - t1) * b2)
    return np.concatenate(pieces + [pts[:1] if closed else pts[-1:]])


def _arc_length(curve: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])


def _sample_at(curve: np.ndarray, arc: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.stack([np.interp(s, arc, curve[:, i]) for i in range(3)], axis=-1)


def look_at_c2w(positions: np.ndarray, targets: np.ndarray) -> torch.Tensor:
    """Poses (F, 4, 4) at ``positions`` looking at ``targets`` (both (F, 3)), horizon level
    (camera x axis horizontal; world up is -y). Targets straight above/below are not supported."""
    forward = targets - positions
    forward /= np.linalg.norm(forward, axis=-1, keepdims=True)
    down = np.array([0.0, 1.0, 0.0])
    right = np.cross(down, forward)
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    cam_down = np.cross(forward, right)
    c2w = np.tile(np.eye(4), (len(positions), 1, 1))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, cam_down, forward, positions
    return torch.as_tensor(c2w, dtype=torch.float32)


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of a 1D sequence (edges padded with the end values)."""
    radius = int(math.ceil(3 * sigma))
    if radius < 1 or len(values) < 2:
        return values
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    padded = np.concatenate([np.full(radius, values[0]), values, np.full(radius, values[-1])])
    return np.convolve(padded, kernel / kernel.sum(), mode="valid")


def _segment_free(world: World, a: np.ndarray, b: np.ndarray, margin: float, step: float = 0.1) -> bool:
    n = max(2, int(np.linalg.norm(b - a) / step) + 1)
    w = np.linspace(0, 1, n)[:, None]
    return _free(world, (1 - w) * a + w * b, margin)


def random_spline_trajectory(
    world: World,
    num_frames: int,
    seed: int,
    *,
    speed: float = 0.05,
    margin: float = DEFAULT_MARGIN,
    height_jitter: float = 0.15,
    look_ahead: float = 1.0,
    max_turn_deg: float = 4.0,
) -> torch.Tensor:
    """A smooth random path of ``num_frames`` poses, ``speed`` metres apart, starting at the origin.

    Control points 1.5-4 m apart with heading changes up to 60 degrees are drawn in free space
    (``margin`` + 0.15 m, straight links checked); the camera follows the Catmull-Rom curve
    through them at constant speed, bobs up and down by up to ``height_jitter`` metres, and
    turns towards the point ``look_ahead`` metres further along the path (heading smoothed
    over about a metre of path; the horizon stays level). Paths are redrawn (up to 50 times)
    until one turns at most ``max_turn_deg`` per frame, else the calmest free one is returned.
    Raises RuntimeError if no free path is found at all (not seen in practice; try another seed).
    """
    _check_common(world, num_frames, margin)
    if not (speed > 0 and look_ahead > 0 and max_turn_deg > 0 and 0 <= height_jitter < 0.5):
        raise UserInputError("speed, look_ahead and max_turn_deg must be positive and height_jitter in [0, 0.5)")
    rng = _rng(world, seed, 12)
    needed = speed * (num_frames - 1) + look_ahead
    best, best_turn = None, math.inf
    for _ in range(50):
        controls = [np.zeros(3)]
        heading, total, stuck = 0.0, 0.0, 0
        while total < needed + 2.0 and stuck < 40:
            # Gentle bends; after repeated collisions allow any direction (turning back at a wall).
            turn = rng.uniform(-1, 1) * (math.radians(50) if stuck < 20 else math.pi)
            length = rng.uniform(1.5, 4.0)
            new = controls[-1] + length * np.array([math.sin(heading + turn), 0.0, math.cos(heading + turn)])
            if _segment_free(world, controls[-1], new, margin + 0.15):
                controls.append(new)
                heading, total, stuck = heading + turn, total + length, 0
            else:
                stuck += 1
        if len(controls) < 3 or total < needed:
            continue
        curve = catmull_rom(np.stack(controls), 32)
        arc = _arc_length(curve)
        s = np.arange(num_frames) * speed
        positions = _sample_at(curve, arc, s)
        if height_jitter > 0:  # two slow sinusoids, zero at the start; |sin a - sin b| <= 2, hence / 2
            for amp, wavelength in ((0.6, rng.uniform(4, 9)), (0.4, rng.uniform(1.5, 3.5))):
                phase = rng.uniform(0, 2 * math.pi)
                wave = np.sin(2 * math.pi * s / wavelength + phase) - math.sin(phase)
                positions[:, 1] += 0.5 * height_jitter * amp * wave
        ahead = _sample_at(curve, arc, s + look_ahead) - positions
        # Heading towards the look-ahead point, low-pass filtered over about a metre of path so
        # that tight bends do not whip the camera round.
        yaw = _smooth(np.unwrap(np.arctan2(ahead[:, 0], ahead[:, 2])), sigma=0.5 / speed)
        c2w = look_at_c2w(positions, positions + np.stack([np.sin(yaw), np.zeros_like(yaw), np.cos(yaw)], -1))
        if trajectory_clearance(world, c2w) < margin or not bool(world.in_bounds(c2w[:, :3, 3]).all()):
            continue
        turn_rate = math.degrees(float(np.abs(np.diff(yaw)).max()))
        if turn_rate <= max_turn_deg:
            return c2w
        if turn_rate < best_turn:  # free but turning fast: keep the calmest in case nothing is better
            best, best_turn = c2w, turn_rate
    if best is not None:
        return best
    raise RuntimeError(f"no free spline path found in world {world.kind} seed {world.seed} (trajectory seed {seed})")


def loop_trajectory(
    world: World,
    num_frames: int,
    seed: int,
    *,
    speed: float = 0.05,
    margin: float = DEFAULT_MARGIN,
    look_ahead: float = 0.8,
) -> torch.Tensor:
    """A closed loop through the origin, walked at about ``speed`` m/frame, facing along the path.

    The loop is a smooth closed curve through 6 jittered points of an ellipse; its size aims at
    one lap of ``(num_frames - 1) * speed`` metres and shrinks until it fits in free space
    (then the camera goes round several times to keep the speed). The last pose equals the
    first. If nothing fits, a 0.4 m radius circle next to the origin is used (always free).
    """
    _check_common(world, num_frames, margin)
    if not speed > 0 or not look_ahead > 0:
        raise UserInputError("speed and look_ahead must be positive")
    rng = _rng(world, seed, 13)
    wanted = speed * (num_frames - 1)
    curve = None
    perimeter = wanted
    for attempt in range(40):
        perimeter = max(wanted * 0.85 ** attempt, 2.0 * math.pi * 0.4)
        radius = perimeter / (2 * math.pi)
        aspect = rng.uniform(0.5, 1.0)
        angles = np.sort(rng.uniform(0, 2 * math.pi, 6)) if attempt % 2 else np.linspace(0, 2 * math.pi, 6, endpoint=False)
        radii = radius * (1 + 0.15 * rng.uniform(-1, 1, 6))
        local = np.stack([radii * np.cos(angles), np.zeros(6), aspect * radii * np.sin(angles)], axis=-1)
        # Rotate the shape randomly and shift it so that control point 0 sits at the origin.
        yaw = rng.uniform(0, 2 * math.pi)
        rot = np.array([[math.cos(yaw), 0.0, math.sin(yaw)], [0.0, 1.0, 0.0], [-math.sin(yaw), 0.0, math.cos(yaw)]])
        points = local @ rot.T
        points = points - points[0]
        if rng.uniform() < 0.5:
            points = np.concatenate([points[:1], points[1:][::-1]])  # the other way round
        candidate = catmull_rom(points, 48, closed=True)
        if _free(world, candidate, margin + 0.05):
            curve = candidate
            break
    if curve is None:
        angles = np.linspace(0, 2 * math.pi, 97)
        curve = np.stack([0.4 * np.cos(angles) - 0.4, np.zeros_like(angles), 0.4 * np.sin(angles)], axis=-1)
    arc = _arc_length(curve)
    length = arc[-1]
    laps = max(1, round(wanted / length))
    s = np.linspace(0.0, laps * length, num_frames)
    positions = _sample_at(curve, arc, np.mod(s, length))
    targets = _sample_at(curve, arc, np.mod(s + look_ahead, length))
    positions[-1] = positions[0]  # exactly closed, whatever the rounding of mod()
    targets[-1] = targets[0]
    return look_at_c2w(positions, targets)
