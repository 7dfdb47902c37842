"""Revisit pairs and first-vs-last-window degradation."""

import numpy as np
import pytest

from _evaluation_scene import axis_angle_to_matrix
from sanawm.errors import UserInputError
from sanawm.evaluation import RevisitConfig, find_revisit_pairs, revisit_scores, window_frames, window_trend


def _out_and_back(turn_around: bool, steps=30, step=0.05):
    """Walk forward, then back to the start: facing back after a 180-degree turn on the spot
    (18 frames of 10 degrees), or still facing forward (walking backwards)."""
    poses = []
    for i in range(steps):
        p = np.eye(4)
        p[2, 3] = i * step
        poses.append(p)
    heading = np.eye(3)
    if turn_around:
        for k in range(1, 19):
            p = poses[steps - 1].copy()
            p[:3, :3] = heading = axis_angle_to_matrix([0, 1, 0], 10.0 * k)
            poses.append(p)
    for i in range(steps - 1, -1, -1):
        p = np.eye(4)
        p[:3, :3] = heading
        p[2, 3] = i * step
        poses.append(p)
    return np.stack(poses)


def test_straight_walk_has_no_revisits():
    poses = np.tile(np.eye(4), (60, 1, 1))
    poses[:, 2, 3] = np.arange(60) * 0.05
    assert find_revisit_pairs(poses, fps=16) == []


def test_standing_still_then_returning_is_found_with_exact_distance():
    poses = np.tile(np.eye(4), (50, 1, 1))
    poses[10:40, 0, 3] = 1.0  # leave for 30 frames, then come back to the same pose
    pairs = find_revisit_pairs(poses, fps=10, config=RevisitConfig(min_gap_sec=3.0, max_pairs=3))
    assert pairs, "the return to the start pose was not found"
    for p in pairs:
        assert p.frame_b - p.frame_a >= 30
        assert p.distance == 0.0 and p.angle_deg == pytest.approx(0.0, abs=1e-6)
        assert p.frame_a < 10 and p.frame_b >= 40


def test_walking_back_facing_forward_revisits_every_position():
    poses = _out_and_back(turn_around=False)
    config = RevisitConfig(max_distance=0.12, max_angle_deg=15.0, min_gap_sec=1.0, max_pairs=5)
    pairs = find_revisit_pairs(poses, fps=16, config=config)
    # exact returns (a, 59 - a) need a gap of 16 frames, so a <= 21; picking best first and
    # skipping pairs within half a gap (8 frames) of a chosen one leaves a = 0, 8, 16
    assert [(p.frame_a, p.frame_b) for p in pairs] == [(16, 43), (8, 51), (0, 59)]
    centres = poses[:, :3, 3]
    for p in pairs:
        assert p.frame_b - p.frame_a >= 16
        assert np.linalg.norm(centres[p.frame_a] - centres[p.frame_b]) == pytest.approx(p.distance)
        assert p.distance == 0.0  # exact returns exist (frame a and frame 59 - a), so they win


def test_walking_back_after_turning_around_is_no_revisit():
    # same positions, but the camera faces the other way: nothing seen before is in view
    poses = _out_and_back(turn_around=True)
    assert find_revisit_pairs(poses, fps=16, config=RevisitConfig(min_gap_sec=1.0)) == []


def test_same_heading_return_on_a_loop_is_found():
    # a closed square loop keeping one heading: every frame of lap two revisits lap one
    side = np.linspace(0, 1, 10, endpoint=False)
    path = np.concatenate([np.c_[side, 0 * side], np.c_[1 + 0 * side, side], np.c_[1 - side, 1 + 0 * side], np.c_[0 * side, 1 - side]])
    path = np.concatenate([path, path])  # two laps
    poses = np.tile(np.eye(4), (len(path), 1, 1))
    poses[:, 0, 3], poses[:, 2, 3] = path[:, 0], path[:, 1]
    pairs = find_revisit_pairs(poses, fps=10, config=RevisitConfig(max_pairs=4))
    assert len(pairs) == 4
    assert all(p.frame_b - p.frame_a == 40 and p.distance < 1e-12 for p in pairs)


def test_revisit_scores_of_identical_frames():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(50, 24, 24, 3), dtype=np.uint8)
    frames[45] = frames[0]
    poses = np.tile(np.eye(4), (50, 1, 1))
    poses[:5, 0, 3] = np.arange(5) * 0.01  # (0, 45) is the one exact return
    poses[5:45, 0, 3] = 1.0
    poses[45:, 0, 3] = np.arange(5) * 0.011
    pairs = find_revisit_pairs(poses, fps=10, config=RevisitConfig(max_pairs=20))
    scores = {(s["frame_a"], s["frame_b"]): s for s in revisit_scores(frames, pairs)}
    assert (0, 45) in scores
    assert scores[(0, 45)]["psnr"] == 100.0 and scores[(0, 45)]["ssim"] == pytest.approx(1.0, abs=1e-6)
    others = [s["psnr"] for key, s in scores.items() if key != (0, 45)]
    assert others and max(others) < 20.0  # unrelated noise frames


def test_window_trend_and_window_length():
    values = np.r_[np.full(10, 5.0), np.linspace(5, 1, 30), np.full(10, 1.0)]
    trend = window_trend(values, 10)
    assert trend == {"first_window": 5.0, "last_window": 1.0, "degradation": 4.0}
    assert window_frames(961, 16, 10.0) == 160
    assert window_frames(33, 16, 10.0) == 16  # short clip: half of it each
    with pytest.raises(UserInputError):
        window_trend(values, 0)
    with pytest.raises(UserInputError):
        window_frames(1, 16, 10.0)


def test_bad_revisit_settings_raise():
    with pytest.raises(UserInputError):
        RevisitConfig(max_distance=0)
    with pytest.raises(UserInputError):
        RevisitConfig(max_pairs=0)
    with pytest.raises(UserInputError, match="fps"):
        find_revisit_pairs(np.tile(np.eye(4), (5, 1, 1)), fps=0)
