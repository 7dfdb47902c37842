"""Trajectory tools against analytic paths, quaternion helpers, and the plot."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from sanawm.camera import (
    Trajectory,
    action_to_c2w,
    concat_trajectories,
    loop_back,
    plot_trajectory,
    pose_inverse,
    resample_trajectory,
)
from sanawm.camera.rotations import matrix_to_quaternion, quaternion_to_matrix, slerp
from sanawm.errors import UserInputError

K = [40.0, 40.0, 32.0, 24.0]
SIZE = (48, 64)


def _yaw(deg):
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def _yaw_walk(angles_deg, positions):
    c2w = np.tile(np.eye(4), (len(angles_deg), 1, 1))
    for f, (a, p) in enumerate(zip(angles_deg, positions)):
        c2w[f, :3, :3], c2w[f, :3, 3] = _yaw(a), p
    return c2w


def test_resample_constant_speed_yaw_exactly():
    # 11 poses turning 4 degrees per frame while sliding along a straight line
    times = np.arange(11)
    traj = Trajectory(_yaw_walk(4.0 * times, np.outer(times, [0.1, 0.0, 0.3])), K, SIZE)
    fine = resample_trajectory(traj, 41)
    t = np.arange(41) * 10 / 40
    want = _yaw_walk(4.0 * t, np.outer(t, [0.1, 0.0, 0.3]))
    np.testing.assert_allclose(fine.c2w.double().numpy(), want, atol=2e-6)
    coarse = resample_trajectory(traj, 6)
    want = _yaw_walk(8.0 * np.arange(6), np.outer(2 * np.arange(6), [0.1, 0.0, 0.3]))
    np.testing.assert_allclose(coarse.c2w.double().numpy(), want, atol=2e-6)


def test_resample_endpoints_identity_and_intrinsics():
    c2w = action_to_c2w("wl-7,ik-3,di-9,jk-6")
    k = np.stack([[30 + f, 31 + f, 32.0, 24 - f * 0.5] for f in range(c2w.shape[0])])
    traj = Trajectory(c2w, k, SIZE)
    for n in (2, 5, 77):
        out = resample_trajectory(traj, n)
        assert out.num_frames == n
        torch.testing.assert_close(out.c2w[0], traj.c2w[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(out.c2w[-1], traj.c2w[-1], atol=1e-6, rtol=0)
        torch.testing.assert_close(out.intrinsics[-1], traj.intrinsics[-1])
    same = resample_trajectory(traj, traj.num_frames)
    torch.testing.assert_close(same.c2w, traj.c2w, atol=0, rtol=0)
    half = resample_trajectory(traj, 2 * traj.num_frames - 1)  # new frame 2i+1 sits between i and i+1
    np.testing.assert_allclose(half.intrinsics[1::2].numpy(), (k[:-1] + k[1:]) / 2, rtol=1e-6)
    assert resample_trajectory(traj, 1).num_frames == 1
    with pytest.raises(UserInputError, match="num_frames"):
        resample_trajectory(traj, 0)


def test_quaternions_round_trip_including_half_turns():
    rng = np.random.default_rng(5)
    mats = []
    for _ in range(50):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        mats.append(q * np.sign(np.linalg.det(q)))
    mats += [np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1]), np.eye(3), _yaw(179.9999)]
    rot = torch.tensor(np.stack(mats))
    quat = matrix_to_quaternion(rot)
    torch.testing.assert_close(quaternion_to_matrix(quat), rot, atol=1e-12, rtol=0)
    torch.testing.assert_close(quat.norm(dim=-1), torch.ones(len(mats), dtype=torch.float64))
    # SLERP halfway between yaw 10 and yaw 50 is yaw 30; between a quaternion and its negation stays put
    q = matrix_to_quaternion(torch.tensor(np.stack([_yaw(10), _yaw(50)])))
    mid = quaternion_to_matrix(slerp(q[0], q[1], torch.tensor(0.5, dtype=torch.float64)))
    np.testing.assert_allclose(mid.numpy(), _yaw(30), atol=1e-12)
    same = quaternion_to_matrix(slerp(q[0], -q[0], torch.tensor(0.3, dtype=torch.float64)))
    np.testing.assert_allclose(same.numpy(), _yaw(10), atol=1e-12)


def test_concat_reanchors_second_path():
    a = Trajectory(action_to_c2w("wl-6"), K, SIZE)
    b_local = action_to_c2w("di-5")
    offset = torch.eye(4)
    offset[:3, :3] = torch.tensor(_yaw(70.0), dtype=torch.float32)
    offset[:3, 3] = torch.tensor([5.0, -1.0, 2.0])
    b = Trajectory(offset @ b_local, [41.0, 41.0, 32.0, 24.0], SIZE)
    out = concat_trajectories(a, b)
    assert out.num_frames == 7 + 6 - 1
    torch.testing.assert_close(out.c2w[:7], a.c2w)
    for i in range(1, 6):  # b's frame-to-frame motion is preserved
        want = pose_inverse(b.c2w[i - 1].double()) @ b.c2w[i].double()
        got = pose_inverse(out.c2w[5 + i].double()) @ out.c2w[6 + i].double()
        torch.testing.assert_close(got, want, atol=2e-6, rtol=0)
    assert out.intrinsics[-1, 0] == 41.0 and out.intrinsics[6, 0] == 40.0
    with pytest.raises(UserInputError, match="image sizes"):
        concat_trajectories(a, Trajectory(b.c2w, K, (48, 48)))


def test_loop_back_returns_to_start_at_constant_speed():
    traj = Trajectory(action_to_c2w("wl-20,di-10"), K, SIZE)
    out = loop_back(traj, 12)
    assert out.num_frames == traj.num_frames + 12
    torch.testing.assert_close(out.c2w[-1], traj.c2w[0], atol=0, rtol=0)
    torch.testing.assert_close(out.c2w[: traj.num_frames], traj.c2w)
    steps = (out.c2w[traj.num_frames - 1 :, :3, 3].diff(dim=0)).norm(dim=-1)
    torch.testing.assert_close(steps, steps.mean().expand(12), atol=1e-6, rtol=0)
    q = matrix_to_quaternion(out.c2w[traj.num_frames - 1 :, :3, :3].double())
    angles = 2 * torch.acos((q[1:] * q[:-1]).sum(-1).abs().clamp_max(1))
    torch.testing.assert_close(angles, angles.mean().expand(12), atol=1e-5, rtol=0)
    with pytest.raises(UserInputError, match="num_return_frames"):
        loop_back(traj, 0)


def test_plot_writes_png(tmp_path):
    traj = loop_back(Trajectory(action_to_c2w("w-20,l-40,w-10"), K, SIZE), 10)
    path = plot_trajectory(traj, tmp_path / "path.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        assert img.size == (600, 600)
        pixels = np.asarray(img.convert("L"))
    assert (pixels < 128).mean() > 0.002  # something was drawn
    static = plot_trajectory(Trajectory(np.eye(4)[None], K, SIZE), tmp_path / "static.png")
    assert static.stat().st_size > 1000


def test_rescale_trajectory_is_a_plain_resize_of_the_intrinsics():
    from sanawm.camera import Trajectory, action_to_c2w, rescale_trajectory, scale_intrinsics

    k = torch.tensor([[50.0, 40.0, 32.0, 24.0], [60.0, 45.0, 30.0, 20.0]], dtype=torch.float64)
    # Independent reference: a pixel's corner-origin coordinate maps by the size ratio per axis.
    expected = k.clone()
    expected[:, [0, 2]] *= 96 / 64
    expected[:, [1, 3]] *= 24 / 48
    torch.testing.assert_close(scale_intrinsics(k, (48, 64), (24, 96)), expected)
    traj = Trajectory(action_to_c2w("w-1"), k, (48, 64))
    resized = rescale_trajectory(traj, (24, 96))
    assert resized.image_size == (24, 96)
    torch.testing.assert_close(resized.intrinsics, expected.float())
    torch.testing.assert_close(resized.c2w, traj.c2w)
    assert rescale_trajectory(traj, (48, 64)) is traj
