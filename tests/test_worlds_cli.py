"""`sanawm render`: writes the video and its camera sidecar; user mistakes exit 2 with one line."""

import numpy as np
import pytest
import torch
from PIL import Image

from sanawm.camera import action_to_c2w, default_intrinsics, load_trajectory, save_camera_npz
from sanawm.cli import main
from sanawm.video import read_video
from sanawm.worlds import make_world, render


def test_render_action_writes_video_and_cameras(tmp_path, capsys):
    out = tmp_path / "gt.mp4"
    code = main(["render", "--world-seed", "3", "--world-kind", "room", "--action", "w-6,l-3", "--size", "32x48",
                 "--out", str(out), "--fps", "12", "--batch", "4", "--first-frame", str(tmp_path / "start.png")])
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    frames, fps = read_video(out)
    assert frames.shape == (10, 32, 48, 3) and fps == pytest.approx(12.0)
    camera = load_trajectory(tmp_path / "gt.camera.npz")
    assert camera.image_size == (32, 48)
    torch.testing.assert_close(camera.c2w, action_to_c2w("w-6,l-3"))
    torch.testing.assert_close(camera.intrinsics, default_intrinsics((32, 48)).expand(10, 4))
    # The video shows exactly those cameras, anti-aliased by default: frame 0's PNG (lossless) is
    # the 3 x 3-ray render, the video that up to H.264's loss (measured 3.3 levels on average).
    world = make_world(3, "room")
    expected = render(world, camera.c2w, camera.intrinsics, (32, 48), supersample=3).numpy()
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "start.png")), expected[0])
    assert np.abs(frames.astype(np.float64) - expected).mean() < 8.0


def test_render_trajectory_file_rescales_intrinsics(tmp_path):
    c2w = action_to_c2w("d-4")
    save_camera_npz(tmp_path / "path.npz", c2w, [40.0, 40.0, 32.0, 16.0], (32, 64))
    out = tmp_path / "half.mp4"
    code = main(["render", "--world-seed", "1", "--trajectory", str(tmp_path / "path.npz"), "--frames", "3",
                 "--size", "16x32", "--out", str(out)])
    assert code == 0
    assert read_video(out)[0].shape == (3, 16, 32, 3)
    camera = load_trajectory(tmp_path / "half.camera.npz")
    torch.testing.assert_close(camera.intrinsics, torch.tensor([[20.0, 20.0, 16.0, 8.0]]).expand(3, 4))
    torch.testing.assert_close(camera.c2w, c2w[:3])


def test_render_random_path(tmp_path):
    out = tmp_path / "loop.mp4"
    assert main(["render", "--world-seed", "2", "--random", "loop", "--trajectory-seed", "1", "--frames", "5",
                 "--size", "16x16", "--out", str(out)]) == 0
    camera = load_trajectory(tmp_path / "loop.camera.npz")
    torch.testing.assert_close(camera.c2w[-1], camera.c2w[0], atol=1e-6, rtol=0)


def test_render_one_ray_per_pixel_on_request(tmp_path):
    assert main(["render", "--world-seed", "3", "--world-kind", "room", "--action", "w-2", "--size", "32x48",
                 "--supersample", "1", "--out", str(tmp_path / "gt.mp4"), "--first-frame", str(tmp_path / "start.png")]) == 0  # fmt: skip
    camera = load_trajectory(tmp_path / "gt.camera.npz")
    world = make_world(3, "room")
    first = np.asarray(Image.open(tmp_path / "start.png"))
    np.testing.assert_array_equal(first, render(world, camera.c2w[:1], camera.intrinsics[:1], (32, 48)).numpy()[0])
    anti_aliased = render(world, camera.c2w[:1], camera.intrinsics[:1], (32, 48), supersample=3).numpy()[0]
    assert np.abs(first.astype(np.float64) - anti_aliased).mean() > 1.0  # the option changes the picture


@pytest.mark.parametrize(
    "args, message",
    [
        (["--action", "w-3", "--size", "15x16"], "even"),
        (["--action", "w-3", "--size", "16x16", "--frames", "9"], "more than the 4 poses"),
        (["--action", "w-3x", "--size", "16x16"], "action segment 1"),
        (["--random", "walk", "--size", "16x16"], "--random needs --frames"),
        (["--action", "w-3", "--size", "16x16", "--trajectory-seed", "2"], "--trajectory-seed"),
        (["--trajectory", "missing.npz", "--size", "16x16"], "missing.npz"),
        (["--action", "w-3", "--size", "16x16", "--supersample", "0"], "--supersample must be positive"),
    ],
)
def test_render_user_errors_exit_2(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code = main(["render", "--world-seed", "0", "--out", "x.mp4", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.mp4").exists()


def test_render_output_must_be_mp4(tmp_path, capsys):
    assert main(["render", "--world-seed", "0", "--action", "w-1", "--size", "16x16",
                 "--out", str(tmp_path / "x.avi")]) == 2
    assert ".mp4" in capsys.readouterr().err
