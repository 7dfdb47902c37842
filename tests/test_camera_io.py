"""Trajectory files: round trips for every format, hand-written RealEstate10K/JSON files, OpenGL
import, and one test per kind of bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sanawm.camera import (
    Trajectory,
    action_to_c2w,
    camera_path_for,
    load_trajectory,
    load_trajectory_at,
    save_camera_npz,
    save_trajectory,
)
from sanawm.errors import UserInputError


def _random_rotation(rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def _trajectory(frames=7, size=(48, 80)):
    rng = np.random.default_rng(3)
    c2w = np.tile(np.eye(4), (frames, 1, 1))
    for f in range(frames):
        c2w[f, :3, :3] = _random_rotation(rng)
        c2w[f, :3, 3] = rng.normal(size=3)
    k = np.stack([[60 + f, 58 - f, 40 + 0.25 * f, 24 - 0.5 * f] for f in range(frames)])
    return Trajectory(c2w, k, size)


def _assert_same(a, b, atol=1e-6):
    assert a.image_size == b.image_size
    torch.testing.assert_close(a.c2w, b.c2w, atol=atol, rtol=0)
    torch.testing.assert_close(a.intrinsics, b.intrinsics, atol=atol * 100, rtol=0)


@pytest.mark.parametrize("name", ["t.camera.npz", "t.json", "t.txt", "T.JSON"])
def test_round_trip(tmp_path, name):
    traj = _trajectory()
    path = save_trajectory(tmp_path / name, traj)
    extra = {"image_size": traj.image_size} if name.endswith(".txt") else {}
    _assert_same(load_trajectory(path, **extra), traj)


def test_round_trip_npy_keeps_poses(tmp_path):
    traj = _trajectory()
    path = save_trajectory(tmp_path / "t.npy", traj)
    assert np.load(path).shape == (7, 4, 4)
    _assert_same(load_trajectory(path, image_size=traj.image_size, intrinsics=traj.intrinsics), traj)
    default = load_trajectory(path, image_size=(48, 80), fov_deg=90.0)
    np.testing.assert_allclose(default.intrinsics.numpy(), [[40.0, 40.0, 40.0, 24.0]] * 7, rtol=1e-6)


def test_save_camera_npz_layout(tmp_path):
    c2w = action_to_c2w("w-4,l-4")
    path = save_camera_npz(tmp_path / "clip.camera.npz", c2w, [50.0, 50.0, 32.0, 24.0], (48, 64))
    assert path.name == "clip.camera.npz"
    with np.load(path) as data:
        assert sorted(data.files) == ["c2w", "image_size", "intrinsics"]
        assert data["c2w"].dtype == np.float32 and data["c2w"].shape == (9, 4, 4)
        assert data["intrinsics"].dtype == np.float32 and data["intrinsics"].shape == (9, 4)
        assert data["image_size"].tolist() == [48, 64]
        np.testing.assert_array_equal(data["c2w"], c2w.numpy())


def test_reads_hand_written_realestate10k(tmp_path):
    # camera at world (1, 2, 3), yawed 90 degrees: w2c = [R^T | -R^T t]
    rot = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    centre = np.array([1.0, 2.0, 3.0])
    w2c = np.concatenate([rot.T, (-rot.T @ centre)[:, None]], axis=1)
    line = "33366 0.5 0.9 0.5 0.5 0 0 " + " ".join(f"{v:.6f}" for v in w2c.reshape(-1))
    path = tmp_path / "cam.txt"
    path.write_text("https://www.youtube.com/watch?v=xyz\n" + line + "\n" + line + "\n\n")
    traj = load_trajectory(path, image_size=(360, 640))
    assert traj.num_frames == 2
    np.testing.assert_allclose(traj.c2w[0, :3, :3].numpy(), rot, atol=1e-6)
    np.testing.assert_allclose(traj.c2w[0, :3, 3].numpy(), centre, atol=1e-6)
    np.testing.assert_allclose(traj.intrinsics[1].numpy(), [320.0, 324.0, 320.0, 180.0])


def test_reads_json_schema_with_single_intrinsics(tmp_path):
    doc = {"image_size": [10, 20], "c2w": [np.eye(4).tolist()] * 3, "intrinsics": [9.0, 9.0, 10.0, 5.0]}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    traj = load_trajectory(path)
    assert traj.intrinsics.shape == (3, 4) and traj.image_size == (10, 20)


def test_opengl_import_flips_camera_y_and_z(tmp_path):
    traj = _trajectory()
    path = save_trajectory(tmp_path / "gl.npz", traj)
    cv = load_trajectory(path, opengl=True)
    np.testing.assert_allclose(cv.c2w[:, :3, 0].numpy(), traj.c2w[:, :3, 0].numpy())
    np.testing.assert_allclose(cv.c2w[:, :3, 1].numpy(), -traj.c2w[:, :3, 1].numpy())
    np.testing.assert_allclose(cv.c2w[:, :3, 2].numpy(), -traj.c2w[:, :3, 2].numpy())
    np.testing.assert_allclose(cv.c2w[:, :3, 3].numpy(), traj.c2w[:, :3, 3].numpy())
    # an OpenGL camera with identity pose looks down world -z
    np.save(tmp_path / "id.npy", np.eye(4)[None])
    fwd = load_trajectory(tmp_path / "id.npy", image_size=(8, 8), opengl=True).c2w[0, :3, 2]
    np.testing.assert_allclose(fwd.numpy(), [0.0, 0.0, -1.0])


def _bad_c2w(kind):
    c2w = np.tile(np.eye(4), (3, 1, 1))
    if kind == "scale":
        c2w[1, :3, :3] *= 1.01
    elif kind == "reflection":
        c2w[2, 0, 0] = -1.0
    elif kind == "nan":
        c2w[1, 0, 3] = np.nan
    elif kind == "inf":
        c2w[0, 2, 3] = np.inf
    elif kind == "bottom":
        c2w[1, 3, 0] = 0.5
    elif kind == "shear":
        c2w[1, 0, 1] = 0.2
    elif kind == "shape":
        c2w = c2w[:, :3, :]
    return c2w


@pytest.mark.parametrize(
    "kind, fragment",
    [
        ("scale", "frame 1 rotation is not orthonormal"),
        ("shear", "frame 1 rotation is not orthonormal"),
        ("reflection", "frame 2 rotation has determinant"),
        ("nan", "NaN or inf"),
        ("inf", "NaN or inf"),
        ("bottom", "frame 1 has bottom row"),
        ("shape", "(F, 4, 4)"),
    ],
)
def test_bad_poses_in_files(tmp_path, kind, fragment):
    np.save(tmp_path / "bad.npy", _bad_c2w(kind))
    with pytest.raises(UserInputError) as info:
        load_trajectory(tmp_path / "bad.npy", image_size=(8, 8))
    assert fragment in str(info.value) and "bad.npy" in str(info.value)
    with pytest.raises(UserInputError, match="c2w"):
        save_camera_npz(tmp_path / "x.npz", _bad_c2w(kind), [1.0, 1.0, 1.0, 1.0], (8, 8))


def test_bad_files(tmp_path):
    traj = _trajectory(frames=3)
    for name, text in [
        ("a.json", "{not json"),
        ("b.json", json.dumps({"poses": []})),
        ("c.json", json.dumps({"c2w": [np.eye(4).tolist()], "image_size": [8, 8], "fov": 3})),
        ("d.txt", "url\n1 2 3\n"),
        ("e.txt", "url\n"),
        ("f.txt", "url\n" + " ".join(["x"] * 19) + "\n"),
        ("g.npz", "not a zip"),
    ]:
        (tmp_path / name).write_text(text)
        with pytest.raises(UserInputError, match=name):
            load_trajectory(tmp_path / name, image_size=(8, 8))
    np.savez(tmp_path / "h.npz", poses=np.eye(4)[None])
    with pytest.raises(UserInputError, match="no 'c2w'"):
        load_trajectory(tmp_path / "h.npz", image_size=(8, 8))
    with pytest.raises(UserInputError, match="unknown trajectory format '.csv'"):
        load_trajectory(tmp_path / "x.csv")
    with pytest.raises(UserInputError, match="unknown trajectory format"):
        save_trajectory(tmp_path / "x", traj)
    with pytest.raises(FileNotFoundError):
        load_trajectory(tmp_path / "missing.npz")


def test_missing_or_contradicting_metadata(tmp_path):
    traj = _trajectory(frames=3)
    np.save(tmp_path / "p.npy", traj.c2w.numpy())
    with pytest.raises(UserInputError, match="image size"):
        load_trajectory(tmp_path / "p.npy")
    path = save_trajectory(tmp_path / "t.npz", traj)
    with pytest.raises(UserInputError, match="image size"):
        load_trajectory(path, image_size=(10, 10))
    with pytest.raises(UserInputError, match="already holds intrinsics"):
        load_trajectory(path, intrinsics=[1.0, 1.0, 1.0, 1.0])
    with pytest.raises(UserInputError, match=r"\(3, 4\)"):
        load_trajectory(tmp_path / "p.npy", image_size=(8, 8), intrinsics=np.ones((2, 4)))
    with pytest.raises(UserInputError, match="focal"):
        Trajectory(traj.c2w, [-1.0, 1.0, 1.0, 1.0], (8, 8))
    with pytest.raises(UserInputError, match="image_size"):
        Trajectory(traj.c2w, traj.intrinsics, (8, 0))


def test_default_image_size_fills_in_but_never_contradicts(tmp_path):
    traj = _trajectory(frames=3, size=(48, 80))
    np.save(tmp_path / "p.npy", traj.c2w.numpy())
    assert load_trajectory(tmp_path / "p.npy", default_image_size=(16, 32)).image_size == (16, 32)
    stored = save_trajectory(tmp_path / "t.npz", traj)
    assert load_trajectory(stored, default_image_size=(16, 32)).image_size == (48, 80)  # the file's size wins
    save_trajectory(tmp_path / "t.txt", traj)  # RealEstate10K: normalised, the size is needed to read it
    read = load_trajectory(tmp_path / "t.txt", default_image_size=(48, 80))
    torch.testing.assert_close(read.intrinsics, traj.intrinsics, atol=1e-4, rtol=0)


def test_load_trajectory_at_rescales_or_adopts_the_video_size(tmp_path):
    traj = Trajectory(action_to_c2w("w-2"), [40.0, 30.0, 32.0, 16.0], (32, 64))
    path = save_trajectory(tmp_path / "t.npz", traj)
    half = load_trajectory_at(path, (16, 32))
    assert half.image_size == (16, 32)
    torch.testing.assert_close(half.intrinsics, torch.tensor([[20.0, 15.0, 16.0, 8.0]]).expand(3, 4))
    torch.testing.assert_close(half.c2w, traj.c2w)
    np.save(tmp_path / "p.npy", traj.c2w.numpy())  # no size stored: taken to be the video's
    own = load_trajectory_at(tmp_path / "p.npy", (16, 32), fov_deg=90.0)
    torch.testing.assert_close(own.intrinsics[0], torch.tensor([16.0, 16.0, 16.0, 8.0]))


def test_camera_file_names_and_atomic_writes(tmp_path):
    assert camera_path_for(tmp_path / "gt.mp4") == tmp_path / "gt.camera.npz"
    assert camera_path_for("a.b.mp4") == Path("a.b.camera.npz")
    traj = _trajectory(frames=3)
    for name in ("t.npz", "t.npy", "t.json", "t.txt"):
        save_trajectory(tmp_path / name, traj)
        save_trajectory(tmp_path / name, traj)  # replacing works, and leaves no temporary file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json", "t.npy", "t.npz", "t.txt"]


def test_garbage_is_not_a_camera_file(tmp_path):
    for name in ("g.npz", "g.npy"):
        (tmp_path / name).write_bytes(np.random.default_rng(1).bytes(200))
        with pytest.raises(UserInputError, match="is not a camera file") as info:
            load_trajectory(tmp_path / name, image_size=(8, 8))
        assert "pickle" not in str(info.value)
