"""Generated camera paths: free space, exact action rollouts, smoothness, loops, determinism."""

import numpy as np
import pytest
import torch

from sanawm.camera import action_to_c2w
from sanawm.errors import UserInputError
from sanawm.worlds import make_world
from sanawm.worlds.trajectories import (
    DEFAULT_MARGIN,
    catmull_rom,
    look_at_c2w,
    loop_trajectory,
    random_action_walk,
    random_spline_trajectory,
    trajectory_clearance,
)

WORLDS = [("room", 1), ("corridor", 3), ("street", 0), ("terrain", 2)]


def _check_rigid(c2w):
    rot = c2w[:, :3, :3].double()
    eye = torch.eye(3, dtype=torch.float64).expand_as(rot)
    torch.testing.assert_close(rot.transpose(1, 2) @ rot, eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(len(rot), dtype=torch.float64), atol=1e-5, rtol=0)
    assert torch.equal(c2w[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(len(c2w), 4))


def _free_along(world, c2w, margin=DEFAULT_MARGIN):
    """Independent check: sample the path densely and require margin and bounds everywhere."""
    centres = c2w[:, :3, 3].double()
    w = torch.linspace(0, 1, 9, dtype=torch.float64)[:-1, None, None]
    dense = ((1 - w) * centres[None, :-1] + w * centres[None, 1:]).reshape(-1, 3)
    assert float(world.free_space_distance(dense.float()).min()) >= margin - 1e-4
    assert bool(world.in_bounds(dense.float()).all())


@pytest.mark.parametrize("kind, seed", WORLDS)
def test_action_walk_is_exact_free_and_reproducible(kind, seed):
    world = make_world(seed, kind)
    action, c2w = random_action_walk(world, 241, seed=5)
    assert c2w.shape == (241, 4, 4) and c2w.dtype == torch.float32
    assert torch.equal(c2w, action_to_c2w(action))  # the string *is* the path
    assert sum(int(seg.rsplit("-", 1)[1]) for seg in action.split(",")) == 240
    _free_along(world, c2w)
    assert trajectory_clearance(world, c2w) >= DEFAULT_MARGIN
    again, c2w_again = random_action_walk(world, 241, seed=5)
    assert again == action and torch.equal(c2w, c2w_again)
    assert random_action_walk(world, 241, seed=6)[0] != action
    travelled = (c2w[1:, :3, 3] - c2w[:-1, :3, 3]).norm(dim=-1).sum()
    assert travelled > 2.0  # it walks, not only turns


def test_action_walk_in_a_tight_box_never_collides():
    # A tiny room: most segments collide, so the planner must fall back to turning in place.
    world = make_world(0, "room")
    action, c2w = random_action_walk(world, 400, seed=1, translation_speed=0.2, margin=0.9)
    assert torch.equal(c2w, action_to_c2w(action, translation_speed=0.2))
    _free_along(world, c2w, margin=0.9)


@pytest.mark.parametrize("kind, seed", WORLDS)
def test_spline_path_is_smooth_free_and_walks_at_speed(kind, seed):
    world = make_world(seed, kind)
    c2w = random_spline_trajectory(world, 200, seed=3, speed=0.05)
    assert c2w.shape == (200, 4, 4)
    _check_rigid(c2w)
    _free_along(world, c2w)
    assert c2w[0, :3, 3].abs().max() < 1e-6  # starts at the origin
    xz = c2w[:, [0, 2], 3].double()
    steps = (xz[1:] - xz[:-1]).norm(dim=-1)
    # Constant speed along the curve; the straight chord is at most slightly shorter.
    assert float(steps.max()) <= 0.05 + 1e-4 and float(steps.min()) > 0.045
    assert float(c2w[:, 1, 3].abs().max()) <= 0.15 + 1e-6  # height bob within height_jitter
    # Level horizon: the camera x axis stays horizontal; forward turns smoothly.
    assert float(c2w[:, 1, 0].abs().max()) < 1e-6
    forward = c2w[:, :3, 2].double()
    turn = torch.rad2deg(torch.acos((forward[1:] * forward[:-1]).sum(-1).clamp(-1, 1)))
    assert float(turn.max()) <= 4.0 + 1e-3  # the default max_turn_deg
    assert torch.equal(c2w, random_spline_trajectory(world, 200, seed=3, speed=0.05))


@pytest.mark.parametrize("kind, seed", WORLDS)
def test_loop_returns_to_its_first_pose(kind, seed):
    world = make_world(seed, kind)
    c2w = loop_trajectory(world, 240, seed=4)
    _check_rigid(c2w)
    _free_along(world, c2w)
    torch.testing.assert_close(c2w[-1], c2w[0], atol=1e-6, rtol=0)
    assert c2w[0, :3, 3].abs().max() < 1e-6
    steps = (c2w[1:, :3, 3] - c2w[:-1, :3, 3]).norm(dim=-1)
    assert float(steps.max()) < 0.08 and float(steps.min()) > 0.01
    # Halfway round, the camera is away from the start (it is a loop, not a stand-still).
    assert float(c2w[:, :3, 3].norm(dim=-1).max()) > 0.5


def test_catmull_rom_interpolates_and_closes():
    pts = np.array([[0.0, 0, 0], [1.0, 0, 2.0], [3.0, 0, 2.5], [4.0, 0, 0.0]])
    open_curve = catmull_rom(pts, 10)
    assert open_curve.shape == (31, 3)
    np.testing.assert_allclose(open_curve[::10], pts, atol=1e-9)  # passes through every control point
    closed = catmull_rom(pts, 10, closed=True)
    assert closed.shape == (41, 3)
    np.testing.assert_allclose(closed[::10], np.concatenate([pts, pts[:1]]), atol=1e-9)
    # Smooth: successive chords turn gradually (no cusp at the joins).
    d = np.diff(closed, axis=0)
    cos = (d[1:] * d[:-1]).sum(-1) / np.linalg.norm(d[1:], axis=-1) / np.linalg.norm(d[:-1], axis=-1)
    assert cos.min() > 0.5


def test_look_at_builds_opencv_poses():
    c2w = look_at_c2w(np.array([[0.0, 0.0, 0.0], [1.0, -0.5, 2.0]]), np.array([[0.0, 0.0, 5.0], [4.0, -0.5, 2.0]]))
    torch.testing.assert_close(c2w[0], torch.eye(4))  # looking down +z is the identity
    torch.testing.assert_close(c2w[1, :3, 2], torch.tensor([1.0, 0.0, 0.0]))  # looking along +x
    torch.testing.assert_close(c2w[1, :3, 1], torch.tensor([0.0, 1.0, 0.0]))  # camera down = world down
    _check_rigid(c2w)


def test_trajectory_argument_errors():
    world = make_world(0, "terrain")
    with pytest.raises(UserInputError, match="num_frames"):
        random_action_walk(world, 1, seed=0)
    with pytest.raises(UserInputError, match="seed"):
        loop_trajectory(world, 10, seed=-3)
    with pytest.raises(UserInputError, match="margin"):
        random_spline_trajectory(world, 10, seed=0, margin=-1.0)
    with pytest.raises(UserInputError, match="world"):
        loop_trajectory("room", 10, seed=0)
