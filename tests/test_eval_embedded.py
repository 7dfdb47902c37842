"""scripts/eval_embedded.py: the evaluation harness of the embedded model (structure, not quality).

The end-to-end test runs the script's core on one short clip with a tiny random model (the
frames are noise; only the report's shape and the baselines' exactly known parts are checked).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _tiny_models import make_text_free_model_dir
from sanawm.camera import action_to_c2w, default_intrinsics
from sanawm.pipeline import WorldModel
from sanawm.train.data import HELD_OUT_SEED_BASE
from sanawm.worlds import KINDS, make_world, render
from sanawm.worlds.trajectories import DEFAULT_MARGIN, trajectory_clearance

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "eval_embedded.py"


@pytest.fixture(scope="module")
def ev():
    spec = importlib.util.spec_from_file_location("eval_embedded", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["eval_embedded"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("eval_embedded", None)


def _psnr64(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0**2 / mse)


def test_default_clips_cover_the_motions_in_held_out_worlds(ev):
    clips = ev.default_clips()
    assert len(clips) == 32 and len({c.name for c in clips}) == 32
    assert [c.index for c in clips] == list(range(32))  # a clip run alone (--clips) keeps its seed
    assert sorted(c.kind for c in clips) == sorted(list(KINDS) * 8)
    written = [c for c in clips if c.action is not None]
    assert len(written) == 16
    labels = [ev.motion_type(c.action, random_walk=False) for c in written]
    for motion in ("forward", "yaw left", "yaw right", "pitch up", "pitch down", "mixed"):
        assert motion in labels
    assert all(len(action_to_c2w(c.action)) == 33 for c in written)
    # the first clips already cover forward, yaw, pitch and a random walk (for --limit)
    assert [ev.motion_type(c.action or "", c.action is None) for c in clips[:4]] == [
        "forward", "yaw right", "pitch up", "walk"
    ]


def test_a_resolved_clip_is_held_out_and_in_free_space(ev):
    spec = ev.default_clips()[0]  # w-32: 1.6 m forward, the path that needs room
    clip = ev.resolve_clip(spec, 0.05, 1.2)
    assert clip.world_seed >= HELD_OUT_SEED_BASE
    world = make_world(clip.world_seed, spec.kind)
    assert trajectory_clearance(world, clip.c2w) >= DEFAULT_MARGIN
    torch.testing.assert_close(clip.c2w, action_to_c2w("w-32", translation_speed=0.05, rotation_speed_deg=1.2))


def test_yaw_and_pitch_signs_follow_the_action_language(ev):
    # "l" turns right and "i" looks up by 1.2 degrees per frame (sanawm.camera.actions)
    yaw, pitch = ev.yaw_pitch_deg(action_to_c2w("l-10").double().numpy())
    assert yaw[-1] == pytest.approx(12.0, abs=1e-4) and abs(pitch[-1]) < 1e-4
    yaw, pitch = ev.yaw_pitch_deg(action_to_c2w("i-10,j-5").double().numpy())
    assert pitch[10] == pytest.approx(12.0, abs=1e-4) and yaw[10] == pytest.approx(0.0, abs=1e-4)
    assert yaw[-1] == pytest.approx(-6.0, abs=1e-4)


def test_motion_measures(ev):
    commanded = action_to_c2w("i-8,k-8,wl-16").double().numpy()
    m = ev.motion_measures(commanded, commanded)
    assert m["pitch_deg"]["frame"] == 8 and m["pitch_deg"]["commanded"] == pytest.approx(9.6, abs=1e-4)
    assert m["yaw_deg"]["estimated"] == pytest.approx(19.2, abs=1e-4)
    assert m["rotation_deg"]["frame"] == 32 and m["rotation_deg"]["commanded"] == pytest.approx(19.2, abs=1e-3)
    assert m["travel"]["direction_err_deg"] == pytest.approx(0.0, abs=1e-3)
    # an estimate at another scale has the same angles and direction
    scaled = commanded.copy()
    scaled[:, :3, 3] *= 3.0
    assert ev.motion_measures(scaled, commanded)["travel"]["direction_err_deg"] == pytest.approx(0.0, abs=1e-3)
    # a static estimate: no turn, and 90 degrees of direction error
    static = ev.motion_measures(np.tile(np.eye(4), (17, 1, 1)), commanded[::2])
    assert static["yaw_deg"]["estimated"] == 0.0 and static["travel"]["direction_err_deg"] == 90.0
    assert static["rotation_deg"]["estimated"] == 0.0
    # walking straight back is 180 degrees off a forward walk
    back = ev.motion_measures(action_to_c2w("s-10").double().numpy(), action_to_c2w("w-10").double().numpy())
    assert back["travel"]["direction_err_deg"] == pytest.approx(180.0, abs=1e-3)
    # a straight walk seen as a turning one: the turn is read at the last frame
    drift = ev.motion_measures(action_to_c2w("wl-10").double().numpy(), action_to_c2w("w-10").double().numpy())
    assert drift["rotation_deg"]["frame"] == 10 and drift["rotation_deg"]["estimated"] == pytest.approx(12.0, abs=1e-3)
    assert drift["yaw_deg"]["commanded"] == 0.0 and drift["yaw_deg"]["estimated"] == pytest.approx(12.0, abs=1e-3)
    # a pure turn has no direction of travel
    assert ev.motion_measures(commanded[:9], commanded[:9])["travel"]["direction_err_deg"] is None


def test_peak_frame_is_where_the_path_has_turned_furthest(ev):
    assert ev.peak_frame(action_to_c2w("l-16,j-16").numpy()) == 16
    assert ev.peak_frame(action_to_c2w("k-10,none-5,i-3").numpy()) == 10  # first of the equal frames
    assert ev.peak_frame(action_to_c2w("w-32").numpy()) == 32  # no rotation: the last frame
    assert ev.peak_frame(action_to_c2w("wa-5,i-7,w-4").numpy()) == 12


def test_peak_psnr_averages_the_window_around_the_peak(ev):
    per_frame = [float(v) for v in range(1, 33)]  # entry i is frame i + 1, value = frame number
    w = ev.PEAK_WINDOW
    assert ev.peak_psnr(per_frame, 16) == pytest.approx(np.mean(np.arange(16 - w, 16 + w + 1)))
    assert ev.peak_psnr(per_frame, 32) == pytest.approx(np.mean(np.arange(32 - w, 33)))  # cut at the end
    assert ev.peak_psnr(per_frame, 1) == pytest.approx(np.mean(np.arange(1, 2 + w)))  # frame 0 is never scored


def test_per_second_windows(ev):
    values = np.arange(1, 33, dtype=float)  # frames 1..32
    assert ev.per_second(values, 16.0) == [8.5, 24.5]
    assert ev.per_second(values[:20], 16.0) == [8.5, 18.5]  # a short last second


def test_core_on_one_clip(ev, tmp_path):
    model_dir = make_text_free_model_dir(tmp_path / "model", height=64, width=64, fps=8.0, steps=4, fov_deg=60.0)
    model = WorldModel.load(model_dir, device="cpu")
    spec = ev.ClipSpec("t", "room", "w-16", frames=17, index=5)  # generated with seed 0 + 5, as in the plan
    settings = ev.EvalSettings(steps=1, workers=0, strip_clips=1)
    evaluation = ev.evaluate(model, [spec], settings, log=lambda line: None)
    report = evaluation.report

    assert report["steps"] == 1 and report["num_clips"] == 1 and report["methods"] == list(ev.METHODS)
    (row,) = report["clips"]
    assert row["world_seed"] >= HELD_OUT_SEED_BASE and row["motion"] == "forward"
    assert row["generation_seed"] == 5
    for method in ev.METHODS:
        scores = row["methods"][method]
        assert len(scores["psnr_per_second"]) == 2 and len(scores["ssim_per_second"]) == 2  # 16 frames at 8 fps
        assert len(scores["psnr_per_frame"]) == 16
        camera = scores["camera"]
        assert {"rot_err_deg", "trans_err_rel", "cammc_rel", "pose_failed", "motion"} <= set(camera)
        assert all(math.isfinite(camera[key]) for key in ("rot_err_deg", "trans_err_rel", "cammc_rel"))
        summary = report["summary"][method]
        assert summary["psnr_per_second"] == pytest.approx(scores["psnr_per_second"])
    assert set(row["ground_truth"]["camera"]) == set(row["methods"]["model"]["camera"])
    assert set(report["summary"]["ground_truth"]) == {"rot_err_deg", "trans_err_rel", "cammc_rel", "pose_failures"}
    assert set(report["visibility"]["forward"]) == {"clips", "ground_truth", *ev.METHODS}
    assert set(report["beats_baselines"]) >= {"psnr_second_1", "ssim_second_2", "rot_err_deg", "all"}
    assert set(report["visibility"]) == {"forward"}

    # the repeat-first-frame baseline, scored independently from a fresh render
    k = default_intrinsics((64, 64), 60.0)
    truth = render(make_world(row["world_seed"], "room"), action_to_c2w("w-16"), k.expand(17, 4), (64, 64)).numpy()
    repeat = row["methods"]["repeat_first_frame"]
    expected_psnr = [_psnr64(truth[0], truth[i]) for i in range(1, 17)]
    assert repeat["psnr_per_second"] == pytest.approx(
        [np.mean(expected_psnr[:8]), np.mean(expected_psnr[8:])], abs=1e-6)
    # ...does not move: its pose estimate failed (scored as static) or shows no turn and no travel
    camera = repeat["camera"]
    motion = camera["motion"]
    assert camera["pose_failed"] or (
        abs(motion["yaw_deg"]["estimated"]) < 0.5
        and abs(motion["pitch_deg"]["estimated"]) < 0.5
        and motion["travel"]["direction_err_deg"] == 90.0
    )

    assert row["peak_frame"] == 16  # w-16 does not rotate: its last frame
    for method in ev.METHODS:
        expected = ev.peak_psnr(row["methods"][method]["psnr_per_frame"], 16)
        assert report["visibility"]["forward"][method]["psnr_at_peak"] == pytest.approx(expected)
    assert report["visibility"]["forward"]["repeat_first_frame"]["psnr_at_peak"] == pytest.approx(
        np.mean(expected_psnr[16 - ev.PEAK_WINDOW - 1 :]), abs=1e-3)  # per-frame values are stored rounded

    paths = ev.write_outputs(evaluation, tmp_path / "out")
    assert [p.name for p in paths] == ["report.json", "report.md", "strip_t.png"]
    assert "| repeat_first_frame |" in (tmp_path / "out" / "report.md").read_text()

    # --rescore: the summaries again from the clips alone, also for a report without peak frames
    old = json.loads((tmp_path / "out" / "report.json").read_text())
    for key in ("summary", "visibility", "beats_baselines"):
        old.pop(key)
    for clip in old["clips"]:
        clip.pop("peak_frame")
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert ev.main(["--out", str(tmp_path / "out"), "--rescore", str(tmp_path / "old.json")]) == 0
    again = json.loads((tmp_path / "out" / "report.json").read_text())
    for key in ("summary", "visibility", "beats_baselines", "clips"):
        assert again[key] == json.loads(json.dumps(report[key])), key
    assert "![strip_t.png](strip_t.png)" in (tmp_path / "out" / "report.md").read_text()
    from PIL import Image

    with Image.open(tmp_path / "out" / "strip_t.png") as strip:  # 3 rows x 5 frames of 64 px, 2 px gaps
        assert strip.size == (5 * 64 + 4 * 2, 3 * 64 + 2 * 2)


def test_a_bad_limit_is_one_line_and_exit_2(ev, tmp_path, capsys):
    assert ev.main(["--out", str(tmp_path), "--limit", "0"]) == 2
    assert "--limit must be between 1 and 32" in capsys.readouterr().err


def test_rescoring_a_file_that_is_no_report_is_one_line_and_exit_2(ev, tmp_path, capsys):
    assert ev.main(["--out", str(tmp_path), "--rescore", str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    (tmp_path / "other.json").write_text('{"clips": [{"name": "x"}]}')
    assert ev.main(["--out", str(tmp_path), "--rescore", str(tmp_path / "other.json")]) == 2
    err = capsys.readouterr().err
    assert "is not a report of this script" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "report.md").exists()


def test_an_unknown_clip_name_is_one_line_and_exit_2(ev, tmp_path, capsys):
    assert ev.main(["--out", str(tmp_path), "--clips", "01_corridor_l-32", "99_moon_w-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no clip named 99_moon_w-1" in err
