"""Video I/O: round trips, validation, progressive writing that survives a killed process."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from sanawm.errors import UserInputError
from sanawm.video import VideoWriter, frame_strip, read_video, save_gif, save_png_strip, write_video


def _moving_frames(n: int, h: int = 32, w: int = 48) -> np.ndarray:
    """Smooth frames (H.264-friendly) with a bright square that moves one block per frame."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, np.full_like(xx, 96.0)], -1)
    frames = np.repeat(base[None], n, 0)
    for i in range(n):
        x0 = (4 * i) % (w - 8)
        frames[i, 8:16, x0 : x0 + 8] = 255
    return frames.astype(np.uint8)


def test_round_trip_numpy_and_torch(tmp_path):
    frames = _moving_frames(12)
    write_video(tmp_path / "a.mp4", frames, fps=16)
    back, fps = read_video(tmp_path / "a.mp4")
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert fps == pytest.approx(16.0)
    # Lossy but close: mean error of a few grey levels, and the moving square is where it should be.
    assert np.abs(back.astype(int) - frames).mean() < 3.0
    for i in (0, 5, 11):
        assert np.argmax(back[i, 12, :, 0].astype(int) + back[i, 12, :, 2]) // 8 == np.argmax(frames[i, 12, :, 2]) // 8

    with VideoWriter(tmp_path / "b.mp4", fps=12.5) as writer:
        writer.write(torch.from_numpy(frames[0]))  # a single (H, W, 3) frame
        writer.write(torch.from_numpy(frames[1:]))  # then a batch
    back_b, fps_b = read_video(tmp_path / "b.mp4")
    assert back_b.shape == frames.shape and fps_b == pytest.approx(12.5)


def test_writer_rejects_bad_frames(tmp_path):
    with pytest.raises(UserInputError, match="even"):
        VideoWriter(tmp_path / "odd.mp4", fps=16, size=(33, 48))
    with pytest.raises(UserInputError, match="uint8"):
        write_video(tmp_path / "f.mp4", np.zeros((2, 32, 48, 3), np.float32), fps=16)
    with pytest.raises(UserInputError, match="shaped"):
        write_video(tmp_path / "g.mp4", np.zeros((2, 32, 48), np.uint8), fps=16)
    with pytest.raises(UserInputError, match="fps"):
        write_video(tmp_path / "h.mp4", np.zeros((2, 32, 48, 3), np.uint8), fps=0)
    with VideoWriter(tmp_path / "s.mp4", fps=16) as writer:
        writer.write(np.zeros((32, 48, 3), np.uint8))
        with pytest.raises(UserInputError, match="differs"):
            writer.write(np.zeros((32, 50, 3), np.uint8))
    with pytest.raises(UserInputError, match="closed"):
        writer.write(np.zeros((32, 48, 3), np.uint8))
    with pytest.raises(UserInputError, match="not found"):
        read_video(tmp_path / "missing.mp4")


def test_interrupted_writer_leaves_playable_file(tmp_path):
    path = tmp_path / "killed.mp4"
    # Write 10 frames in two calls, then die without closing (no trailer, no encoder flush).
    script = textwrap.dedent(
        f"""
        import os, numpy as np
        from sanawm.video import VideoWriter
        writer = VideoWriter({str(path)!r}, fps=16)
        frames = np.zeros((10, 32, 48, 3), np.uint8)
        frames[:, :, :, 1] = np.arange(10, dtype=np.uint8)[:, None, None] * 20
        writer.write(frames[:4])
        writer.write(frames[4:])
        os._exit(0)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    back, _ = read_video(path)
    # Every frame but possibly the last one (held until its duration is known) is on disk.
    assert 9 <= len(back) <= 10
    assert np.abs(back[:9, :, :, 1].mean(axis=(1, 2)) - np.arange(9) * 20).max() < 4


def test_strip_and_gif(tmp_path):
    frames = _moving_frames(5, 8, 10)
    frames[:, 0, 0] = np.arange(5)[:, None] * 50  # make every frame distinct (GIF merges repeats)
    sheet = frame_strip(frames, columns=2, gap=1)
    assert sheet.shape == (3 * 8 + 2, 2 * 10 + 1, 3)
    np.testing.assert_array_equal(sheet[9:17, 11:21], frames[3])  # row 1, column 1
    assert (sheet[8, :] == 255).all()  # the gap row
    save_png_strip(tmp_path / "s.png", frames)
    assert Image.open(tmp_path / "s.png").size == (5 * 10 + 4 * 2, 8)
    save_gif(tmp_path / "a.gif", frames, fps=10)
    gif = Image.open(tmp_path / "a.gif")
    assert gif.n_frames == 5 and gif.info["duration"] == 100
