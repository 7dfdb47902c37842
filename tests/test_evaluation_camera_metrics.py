"""Camera-following metrics: analytic cases, similarity invariance, least-squares optimality."""

import numpy as np
import pytest

from _evaluation_scene import axis_angle_to_matrix
from sanawm.errors import UserInputError
from sanawm.evaluation import align_similarity, camera_errors
from sanawm.evaluation.geometry import invert_rigid, rotation_angle_deg


def _random_trajectory(rng, frames=12):
    poses = np.tile(np.eye(4), (frames, 1, 1))
    for i in range(frames):
        poses[i, :3, :3] = axis_angle_to_matrix(rng.normal(size=3), rng.uniform(0, 60))
        poses[i, :3, 3] = rng.normal(size=3) * 2
    return poses


def _similarity(c2w, rotation, scale, offset):
    out = c2w.copy()
    out[:, :3, :3] = rotation @ c2w[:, :3, :3]
    out[:, :3, 3] = scale * c2w[:, :3, 3] @ rotation.T + offset
    return out


def test_rotation_angle_matches_axis_angle():
    rng = np.random.default_rng(0)
    for angle in (0.0, 0.5, 17.0, 90.0, 179.0):
        base = axis_angle_to_matrix(rng.normal(size=3), rng.uniform(0, 180))
        turned = base @ axis_angle_to_matrix(rng.normal(size=3), angle)
        assert rotation_angle_deg(base, turned) == pytest.approx(angle, abs=1e-6)


def test_identical_trajectories_score_zero():
    poses = _random_trajectory(np.random.default_rng(1))
    errors = camera_errors(poses, poses)
    assert np.abs(errors.rot_err_deg).max() < 1e-5
    assert errors.trans_err.max() < 1e-9 and errors.cammc.max() < 1e-6
    assert errors.alignment.scale == pytest.approx(1.0)


def test_errors_are_invariant_to_a_similarity_of_the_estimate():
    rng = np.random.default_rng(2)
    commanded = _random_trajectory(rng)
    rotation = axis_angle_to_matrix([0.3, -1.0, 0.4], 73.0)
    estimated = _similarity(commanded, rotation, 0.37, np.array([5.0, -2.0, 1.0]))
    errors = camera_errors(estimated, commanded)
    assert errors.rot_err_deg.max() < 1e-5
    assert errors.trans_err.max() < 1e-9
    # without alignment the same estimate is far off: the test above is not vacuous
    assert camera_errors(estimated, commanded, align=False).trans_err.max() > 0.5


def test_alignment_recovers_a_known_similarity():
    rng = np.random.default_rng(3)
    commanded = _random_trajectory(rng)
    rotation = axis_angle_to_matrix([1.0, 2.0, -0.5], 140.0)
    scale, offset = 2.5, np.array([0.1, 3.0, -4.0])
    # estimate = the inverse similarity applied to the commanded poses
    estimated = _similarity(commanded, rotation.T, 1.0 / scale, -(offset @ rotation) / scale)
    fit = align_similarity(estimated, commanded)
    assert np.allclose(fit.rotation, rotation, atol=1e-9)
    assert fit.scale == pytest.approx(scale)
    assert np.allclose(fit.translation, offset, atol=1e-9)


def test_alignment_scale_and_offset_are_least_squares_optimal():
    """With the rotation fixed, (scale, offset) must solve the linear least-squares problem."""
    rng = np.random.default_rng(4)
    commanded = _random_trajectory(rng, frames=20)
    estimated = _similarity(commanded, axis_angle_to_matrix([0, 1, 0], 30.0), 0.5, np.ones(3))
    estimated[:, :3, 3] += rng.normal(scale=0.3, size=(20, 3))  # centres no longer fit exactly
    fit = align_similarity(estimated, commanded)
    rotated = estimated[:, :3, 3] @ fit.rotation.T  # (F, 3)
    # unknowns [s, tx, ty, tz]: commanded = s * rotated + t
    design = np.zeros((60, 4))
    design[:, 0] = rotated.reshape(-1)
    design[:, 1:] = np.tile(np.eye(3), (20, 1))
    solution, *_ = np.linalg.lstsq(design, commanded[:, :3, 3].reshape(-1), rcond=None)
    assert fit.scale == pytest.approx(solution[0], rel=1e-9)
    assert np.allclose(fit.translation, solution[1:], atol=1e-9)


def test_known_rotation_offset_gives_its_angle_and_cammc():
    rng = np.random.default_rng(5)
    commanded = _random_trajectory(rng)
    estimated = commanded.copy()
    angle = 7.5
    estimated[4, :3, :3] = commanded[4, :3, :3] @ axis_angle_to_matrix([0.2, 1.0, 0.1], angle)
    errors = camera_errors(estimated, commanded, align=False)
    expected = np.zeros(len(commanded))
    expected[4] = angle
    assert np.allclose(errors.rot_err_deg, expected, atol=1e-6)
    assert np.allclose(errors.trans_err, 0.0, atol=1e-9)
    # ||R1 - R2||_F = 2 sqrt(2) sin(angle / 2) for two rotations `angle` apart
    assert errors.cammc[4] == pytest.approx(2 * np.sqrt(2) * np.sin(np.radians(angle) / 2))


def test_known_translation_offset_gives_its_distance():
    commanded = _random_trajectory(np.random.default_rng(6))
    estimated = commanded.copy()
    estimated[7, :3, 3] += [0.0, 0.3, 0.4]  # 0.5 away, in the first camera's frame too (frame 0 untouched)
    errors = camera_errors(estimated, commanded, align=False)
    assert errors.trans_err[7] == pytest.approx(0.5)
    assert errors.cammc[7] == pytest.approx(0.5)
    assert np.delete(errors.trans_err, 7).max() < 1e-9


def test_summary_means_follow_sana_wm_and_sums_follow_cameractrl():
    rng = np.random.default_rng(7)
    commanded = _random_trajectory(rng)
    estimated = commanded.copy()
    for i in range(1, len(commanded)):
        estimated[i, :3, :3] = commanded[i, :3, :3] @ axis_angle_to_matrix(rng.normal(size=3), 3.0)
    errors = camera_errors(estimated, commanded, align=False)
    summary = errors.summary()
    assert summary["rot_err_deg"] == pytest.approx(3.0 * (len(commanded) - 1) / len(commanded))
    assert summary["rot_err_deg_sum"] == pytest.approx(3.0 * (len(commanded) - 1))
    assert summary["cammc_rel"] == pytest.approx(errors.cammc.mean())
    assert summary["trans_err_rel_sum"] == pytest.approx(errors.trans_err.sum())


def test_poses_are_compared_relative_to_the_first_frame():
    commanded = _random_trajectory(np.random.default_rng(8))
    moved = invert_rigid(commanded[3]) @ commanded  # same motion, another world frame
    errors = camera_errors(moved, commanded, align=False)
    assert errors.rot_err_deg.max() < 1e-5 and errors.trans_err.max() < 1e-9
    assert np.allclose(errors.commanded_c2w[0], np.eye(4))


def test_a_reversed_estimate_never_gets_a_negative_scale():
    commanded = np.tile(np.eye(4), (10, 1, 1))
    commanded[:, 2, 3] = np.arange(10) * 0.1
    backwards = commanded.copy()
    backwards[:, 2, 3] *= -1.0  # walking backwards while commanded forwards
    fit = align_similarity(backwards, commanded)
    assert fit.scale == 0.0
    assert camera_errors(backwards, commanded).trans_err.mean() > 0.1


def test_bad_inputs_raise_user_errors():
    poses = _random_trajectory(np.random.default_rng(9))
    with pytest.raises(UserInputError, match="poses but the commanded one has"):
        camera_errors(poses[:5], poses)
    with pytest.raises(UserInputError, match=r"\(F, 4, 4\)"):
        camera_errors(poses[:, :3], poses)
    bad = poses.copy()
    bad[2, 0, 0] = np.nan
    with pytest.raises(UserInputError, match="NaN"):
        camera_errors(bad, poses)
