"""Validation on ground-truth renders of procedural worlds, the report, and `sanawm eval`."""

import json

import numpy as np
import pytest

from sanawm.camera import action_to_c2w, default_intrinsics, save_camera_npz
from sanawm.cli import main
from sanawm.errors import UserInputError
from sanawm.evaluation import EvalConfig, PoseEstimationConfig, camera_errors, estimate_poses, evaluate_video
from sanawm.video import write_video
from sanawm.worlds import make_world, render

SIZE = (96, 160)
FPS = 8.0
# forward, a small right turn, then back: the end nearly revisits the start (2 s apart at 8 fps)
ACTION = "w-10,l-6,s-10"
OPENCV = PoseEstimationConfig(backend="opencv")


@pytest.fixture(scope="module")
def clip():
    """Ground-truth render of a procedural room along ACTION: (frames, c2w, intrinsics)."""
    c2w = action_to_c2w(ACTION).double().numpy()
    k = default_intrinsics(SIZE).double().numpy()
    frames = render(make_world(1, "room"), c2w, k, SIZE).numpy()
    return frames, c2w, k


@pytest.fixture(scope="module")
def estimate(clip):
    frames, _, k = clip
    return estimate_poses(frames, k, OPENCV)


def _blurred(frames):
    """A stand-in for a drifting model: the same views, blurrier over time."""
    import cv2

    return np.stack([cv2.GaussianBlur(f, (0, 0), 0.2 + 0.8 * i / len(frames)) for i, f in enumerate(frames)])


def test_ground_truth_render_follows_the_commanded_path(clip, estimate):
    _, c2w, _ = clip
    errors = camera_errors(estimate, c2w)
    assert errors.rot_err_deg.mean() <= 0.3  # measured 0.092
    assert errors.rot_err_deg.max() <= 0.8  # measured 0.166
    assert errors.trans_err.mean() <= 0.03  # metres, on a 0.5 m walk; measured 0.008


def test_ground_truth_render_one_grey_level_off_scores_the_same(clip):
    """Pixels one level off (another machine's rounding of the same render) leave the
    estimate within the same bounds: nothing hinges on exact values."""
    frames, c2w, k = clip
    rng = np.random.default_rng(1)
    shaken = np.clip(frames.astype(int) + rng.integers(-1, 2, frames.shape), 0, 255).astype(np.uint8)
    errors = camera_errors(estimate_poses(shaken, k, OPENCV), c2w)
    assert errors.rot_err_deg.mean() <= 0.3  # measured 0.057
    assert errors.rot_err_deg.max() <= 0.8  # measured 0.127


@pytest.mark.parametrize("action, kind", [("l-16", "room"), ("j-16", "street")])
def test_pure_turn_recovered_on_sharp_and_soft_renders(action, kind):
    """A camera turning on the spot, rendered sharp and blurred to the embedded model's
    sharpness (Gaussian sigma 1.25 px at 128x128, the same `sharpness`): the whole turn is
    read, not a part of it."""
    import cv2

    from sanawm.evaluation.geometry import rotation_angle_deg

    size = (96, 128)
    c2w = action_to_c2w(action, rotation_speed_deg=2.0).double().numpy()  # 32 degrees
    k = default_intrinsics(size).double().numpy()
    frames = render(make_world(3, kind), c2w, k, size).numpy()
    for sigma in (0.0, 1.25):
        video = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in frames]) if sigma else frames
        estimated = estimate_poses(video, k, OPENCV)
        read = rotation_angle_deg(estimated[-1:, :3, :3], estimated[:1, :3, :3])[0]
        assert abs(read / 32.0 - 1.0) <= 0.05  # measured at most 0.4% off
        errors = camera_errors(estimated, c2w)
        assert errors.rot_err_deg.mean() <= 0.3 and errors.rot_err_deg.max() <= 0.8  # measured <= 0.064 / 0.152


def test_a_deliberately_wrong_trajectory_scores_far_worse(clip, estimate):
    _, c2w, _ = clip
    right = camera_errors(estimate, c2w).summary()
    wrong = camera_errors(estimate, action_to_c2w("w-10,j-6,s-10").double().numpy()).summary()  # turns left
    assert wrong["rot_err_deg"] > max(5 * right["rot_err_deg"], 2.0)
    assert wrong["cammc_rel"] > 3 * right["cammc_rel"]


def test_report_against_itself_and_a_degraded_copy(clip):
    frames, c2w, k = clip
    config = EvalConfig(pose_stride=2, pose=OPENCV, window_sec=1.0)
    report = evaluate_video(frames, c2w, k, FPS, reference=frames, config=config)
    assert report["pose_backend"] == "opencv"
    assert report["camera"]["frames"] == list(range(0, len(frames), 2))
    assert len(report["camera"]["rot_err_deg"]) == len(report["camera"]["frames"])
    assert report["rot_err_deg"] <= 1.0
    # a video compared with itself: the PSNR cap and SSIM 1 everywhere, no degradation
    assert report["reference"]["psnr"] == 100.0 and report["reference"]["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert report["temporal"]["psnr"]["degradation"] == 0.0
    assert report["temporal"]["window_frames"] == 8
    # the walk back ends near the start: one revisit, scored on the video and on the reference
    pairs = report["revisit"]["pairs"]
    assert [(p["frame_a"], p["frame_b"]) for p in pairs] == [(5, 21)]
    assert pairs[0]["psnr"] == pairs[0]["reference_psnr"] < 100.0

    degraded = evaluate_video(_blurred(frames), c2w, k, FPS, reference=frames, config=config)
    assert degraded["temporal"]["psnr"]["degradation"] > 3.0  # dB lost from the first to the last second
    assert degraded["temporal"]["sharpness"]["degradation"] > 0.0
    assert degraded["reference"]["ssim"] < 1.0


def test_report_rejects_mismatched_inputs(clip):
    frames, c2w, k = clip
    with pytest.raises(UserInputError, match="27 frames but the trajectory has 20 poses"):
        evaluate_video(frames, c2w[:20], k, FPS)
    with pytest.raises(UserInputError, match="reference video"):
        evaluate_video(frames, c2w, k, FPS, reference=frames[:, :50], config=EvalConfig(pose=OPENCV))
    with pytest.raises(UserInputError, match="pose stride"):
        EvalConfig(pose_stride=0)


def test_cli_writes_report_and_plot(clip, tmp_path, capsys):
    frames, c2w, k = clip
    write_video(tmp_path / "gt.mp4", frames, FPS)
    write_video(tmp_path / "gen.mp4", _blurred(frames), FPS)
    save_camera_npz(tmp_path / "gt.camera.npz", c2w, k, SIZE)
    out, png = tmp_path / "scores.json", tmp_path / "scores.png"
    code = main([
        "eval", "--video", str(tmp_path / "gen.mp4"), "--trajectory", str(tmp_path / "gt.camera.npz"),
        "--reference", str(tmp_path / "gt.mp4"), "--json", str(out), "--plot", str(png),
        "--stride", "2", "--window", "1", "--pose-backend", "opencv",
    ])
    assert code == 0
    report = json.loads(out.read_text())
    for key in ("rot_err_deg", "trans_err_rel", "cammc_rel", "camera", "reference", "revisit", "temporal"):
        assert key in report
    assert report["rot_err_deg"] <= 1.0
    assert len(report["camera"]["cammc_rel"]) == 14
    assert report["reference"]["video"].endswith("gt.mp4")
    assert report["temporal"]["psnr"]["degradation"] > 3.0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "RotErr" in printed and "wrote" in printed


def test_cli_reads_pose_only_trajectories_with_the_video_size(clip, tmp_path):
    """A .npy trajectory has no intrinsics: the default field of view on the video's size."""
    frames, c2w, _ = clip
    write_video(tmp_path / "gt.mp4", frames, FPS)
    np.save(tmp_path / "poses.npy", c2w)
    out = tmp_path / "scores.json"
    code = main([
        "eval", "--video", str(tmp_path / "gt.mp4"), "--trajectory", str(tmp_path / "poses.npy"),
        "--json", str(out), "--stride", "2", "--pose-backend", "opencv",
    ])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["rot_err_deg"] <= 1.0 and "reference" not in report


def test_cli_user_errors_exit_2_with_one_line(clip, tmp_path, capsys):
    frames, c2w, k = clip
    write_video(tmp_path / "gt.mp4", frames, FPS)
    save_camera_npz(tmp_path / "short.camera.npz", c2w[:20], k, SIZE)
    code = main([
        "eval", "--video", str(tmp_path / "gt.mp4"), "--trajectory", str(tmp_path / "short.camera.npz"),
        "--json", str(tmp_path / "x.json"),
    ])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "20 poses" in err
    code = main(["eval", "--video", str(tmp_path / "missing.mp4"), "--trajectory", "t.npz", "--json", "x.json"])
    err = capsys.readouterr().err
    assert code == 2 and "missing.mp4" in err


def test_cli_rescales_intrinsics_stated_for_another_size(clip, tmp_path):
    """A trajectory made for 192x320 evaluated on a 96x160 video: intrinsics scale by 1/2."""
    frames, c2w, k = clip
    write_video(tmp_path / "gt.mp4", frames, FPS)
    save_camera_npz(tmp_path / "big.camera.npz", c2w, k * 2, (2 * SIZE[0], 2 * SIZE[1]))
    out = tmp_path / "scores.json"
    code = main([
        "eval", "--video", str(tmp_path / "gt.mp4"), "--trajectory", str(tmp_path / "big.camera.npz"),
        "--json", str(out), "--stride", "2", "--pose-backend", "opencv",
    ])
    assert code == 0
    assert json.loads(out.read_text())["rot_err_deg"] <= 1.0


def _no_pose_estimation(monkeypatch):
    """Make any pose estimation fail the test: input mistakes must be caught before it."""
    import sanawm.evaluation.report as report_module

    def refuse(*args, **kwargs):
        raise AssertionError("pose estimation ran before the inputs were checked")

    monkeypatch.setattr(report_module, "estimate_poses_with_backend", refuse)


def test_cli_length_mismatches_exit_2_before_pose_estimation(clip, tmp_path, capsys, monkeypatch):
    frames, c2w, k = clip
    _no_pose_estimation(monkeypatch)
    write_video(tmp_path / "gen.mp4", frames[:17], FPS)
    write_video(tmp_path / "gt.mp4", frames, FPS)
    save_camera_npz(tmp_path / "gen.camera.npz", c2w[:17], k, SIZE)
    save_camera_npz(tmp_path / "gt.camera.npz", c2w, k, SIZE)
    base = ["eval", "--json", str(tmp_path / "x.json"), "--video", str(tmp_path / "gen.mp4")]

    code = main([*base, "--trajectory", str(tmp_path / "gen.camera.npz"), "--reference", str(tmp_path / "gt.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "gt.mp4 has 27 frames" in err and "gen.mp4 has 17" in err

    code = main([*base, "--trajectory", str(tmp_path / "gt.camera.npz")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "17 frames but the trajectory has 27 poses" in err
    assert not (tmp_path / "x.json").exists()


def test_reference_of_another_size_is_refused_before_pose_estimation(clip, monkeypatch):
    frames, c2w, k = clip
    _no_pose_estimation(monkeypatch)
    with pytest.raises(UserInputError, match="reference video is 80x96 pixels but the video is 160x96"):
        evaluate_video(frames, c2w, k, FPS, reference=frames[:, :, :80])
    with pytest.raises(UserInputError, match="reference video has 26 frames but the video has 27"):
        evaluate_video(frames, c2w, k, FPS, reference=frames[1:])


@pytest.mark.parametrize("content", [b"", b"not a video\n", bytes(range(256)) * 8])
def test_cli_unreadable_video_is_one_clear_line(tmp_path, capsys, content):
    (tmp_path / "bad.mp4").write_bytes(content)
    video, out = str(tmp_path / "bad.mp4"), str(tmp_path / "x.json")
    code = main(["eval", "--video", video, "--trajectory", "t.npz", "--json", out])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "cannot read video" in err and "bad.mp4" in err and "Errno" not in err
