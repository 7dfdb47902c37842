"""Training clip sources: a folder of clips (npz / RealEstate10K cameras, crops, frame sampling)
and procedural worlds."""

import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sanawm.camera import Trajectory, save_camera_npz, save_trajectory
from sanawm.errors import UserInputError
from sanawm.train.config import FolderConfig, ProceduralConfig
from sanawm.train.data import HELD_OUT_SEED_BASE, FolderClips, ProceduralClips
from sanawm.video import write_video

H0, W0, FRAMES = 48, 80, 12
K0 = [60.0, 58.0, 41.0, 23.0]  # fx, fy, cx, cy in pixels of the 48x80 source


def _poses(frames):
    c2w = torch.eye(4).repeat(frames, 1, 1)
    for f in range(frames):
        a = math.radians(2.0 * f)
        c2w[f, :3, :3] = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
        c2w[f, :3, 3] = torch.tensor([0.1 * f, 0.0, 0.05 * f])
    return c2w


def _write_clip(folder, name, camera="npz", frames=FRAMES, poses=None):
    """Red encodes the source column, green the row (at pixel centres), blue the frame index."""
    x = np.round(255 * (np.arange(W0) + 0.5) / W0)
    y = np.round(255 * (np.arange(H0) + 0.5) / H0)
    video = np.zeros((frames, H0, W0, 3), np.uint8)
    video[..., 0] = x[None, None, :]
    video[..., 1] = y[None, :, None]
    video[..., 2] = (20 * np.arange(frames))[:, None, None]
    write_video(folder / f"{name}.mp4", video, fps=8, crf=0)
    traj = Trajectory(_poses(frames) if poses is None else poses, K0, (H0, W0))
    if camera == "npz":
        save_camera_npz(folder / f"{name}.camera.npz", traj.c2w, traj.intrinsics, (H0, W0))
    else:
        save_trajectory(folder / f"{name}.txt", traj)
    return traj


def _check_clip(clip, num_frames, strides):
    video = clip.video.numpy().astype(np.float64)
    assert clip.video.shape == (num_frames, 32, 32, 3) and clip.video.dtype == torch.uint8
    # Which source frames were taken: blue / 20, an arithmetic sequence with an allowed stride.
    index = np.round(video[:, 16, 16, 2] / 20).astype(int)
    step = index[1] - index[0]
    assert step in strides and np.array_equal(index, index[0] + step * np.arange(num_frames))
    torch.testing.assert_close(clip.c2w, _poses(FRAMES)[index], atol=1e-4, rtol=0)
    # The cropped intrinsics see every pixel in the direction the source camera saw its colour:
    # normalised image coordinates from the decoded source position and from the crop agree.
    fx, fy, cx, cy = clip.intrinsics[0].tolist()
    jj, ii = np.meshgrid(np.arange(2, 30), np.arange(2, 30))
    src_u = video[:, 2:30, 2:30, 0] / 255 * W0
    src_v = video[:, 2:30, 2:30, 1] / 255 * H0
    tol = 3.0 / K0[0]  # about 3 source pixels: colour quantisation plus H.264 chroma error
    assert np.abs((jj + 0.5 - cx) / fx - (src_u - K0[2]) / K0[0]).max() < tol
    assert np.abs((ii + 0.5 - cy) / fy - (src_v - K0[3]) / K0[1]).max() < tol
    return step, (fx, cx)


@pytest.mark.parametrize("camera", ["npz", "re10k"])
def test_folder_clips_sample_frames_and_crop_consistently(tmp_path, camera):
    _write_clip(tmp_path, "walk", camera)
    source = FolderClips(FolderConfig(str(tmp_path), frame_strides=(1, 2), max_zoom=1.6), 5, (32, 32), seed=3)
    assert len(source) == 1
    seen_steps, seen_crops = set(), set()
    for draw in range(6):
        step, crop = _check_clip(source.prepare(draw), 5, (1, 2))
        seen_steps.add(step)
        seen_crops.add(crop)
    assert seen_steps == {1, 2} and len(seen_crops) > 3  # random strides and crops happen
    first, again = source.prepare(4), source.prepare(4)
    assert torch.equal(first.video, again.video) and torch.equal(first.intrinsics, again.intrinsics)


def test_folder_batches_carry_text_sidecars(tmp_path):
    _write_clip(tmp_path, "a")
    _write_clip(tmp_path, "b")
    save_file({"states": torch.randn(3, 8), "mask": torch.tensor([1, 1, 0])}, str(tmp_path / "a.text.safetensors"))
    source = FolderClips(FolderConfig(str(tmp_path)), 5, (32, 32))
    clips = [source.prepare(d) for d in range(2)]
    batch = source.finish(clips, torch.device("cpu"))
    assert batch.video.shape == (2, 5, 32, 32, 3) and batch.pixels().shape == (2, 3, 5, 32, 32)
    has = [c.text_states is not None for c in clips]
    assert sorted(has) == [False, True] and batch.text_present.tolist() == has
    i = has.index(True)
    assert batch.text_mask[i].tolist() == [1, 1, 0] and torch.all(batch.text_states[1 - i] == 0)


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(UserInputError, match="no clips"):
        FolderClips(FolderConfig(str(tmp_path)), 5, (32, 32))
    with pytest.raises(UserInputError, match="not found"):
        FolderClips(FolderConfig(str(tmp_path / "missing")), 5, (32, 32))
    _write_clip(tmp_path, "short", poses=_poses(FRAMES - 2), frames=FRAMES)
    source = FolderClips(FolderConfig(str(tmp_path)), 5, (32, 32))
    with pytest.raises(UserInputError, match="10 poses but .*short.mp4 has 12 frames"):
        source.prepare(0)
    too_long = FolderClips(FolderConfig(str(tmp_path)), 33, (32, 32))
    (tmp_path / "short.camera.npz").unlink()
    _write_clip(tmp_path, "short")
    with pytest.raises(UserInputError, match="too few for 33 frames"):
        too_long.prepare(0)


def test_procedural_clips_are_deterministic_renders_of_valid_cameras():
    cfg = ProceduralConfig(fov_deg=(50.0, 75.0))
    source = ProceduralClips(cfg, 5, (16, 24), seed=7)
    a, b = source.prepare(0), source.prepare(1)
    assert torch.equal(a.c2w, source.prepare(0).c2w) and not torch.equal(a.c2w, b.c2w)
    assert a.world.seed < HELD_OUT_SEED_BASE
    batch = source.finish([a, b], torch.device("cpu"))
    assert batch.video.shape == (2, 5, 16, 24, 3) and batch.video.dtype == torch.uint8
    assert batch.video.float().std() > 1.0  # not a blank image
    torch.testing.assert_close(batch.c2w[:, 0, :3, 3], torch.zeros(2, 3))  # paths start at the origin
    fx = batch.intrinsics[:, 0, 0]
    fov = torch.rad2deg(2 * torch.atan(12.0 / fx))
    assert torch.all((fov >= 50) & (fov <= 75))
    assert torch.allclose(batch.intrinsics[:, :, 2:], torch.tensor([12.0, 8.0]))
    held = ProceduralClips(cfg, 5, (16, 24), seed=7, held_out=True)
    assert all(held.prepare(d).world.seed >= HELD_OUT_SEED_BASE for d in range(3))
    with pytest.raises(UserInputError, match="unknown world kind"):
        ProceduralClips(ProceduralConfig(kinds=("moon",)), 5, (16, 24))
