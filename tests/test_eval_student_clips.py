"""scripts/eval_student.py's clip sets: the 32 clips at 33 frames, the 16 random walks at any other length."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sanawm.errors import UserInputError
from sanawm.evaluation.image_metrics import PSNR_CAP_DB
from sanawm.pipeline import WorldModel
from sanawm.worlds.trajectories import DEFAULT_MARGIN, trajectory_clearance

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "eval_student.py"


@pytest.fixture(scope="module")
def es():
    spec = importlib.util.spec_from_file_location("eval_student", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["eval_student"] = module
    spec.loader.exec_module(module)  # imports eval_embedded from scripts/
    yield module
    sys.modules.pop("eval_student", None)
    sys.modules.pop("eval_embedded", None)


def test_clip_sets(es):
    ee = es.ee
    assert es.clip_specs(33) == ee.default_clips()
    walks = [c for c in ee.default_clips() if c.action is None]
    long = es.clip_specs(81)
    assert len(long) == len(walks) == 16
    assert len({c.name for c in long}) == 16
    for clip, walk in zip(long, walks):
        assert clip.frames == 81 and clip.action is None and clip.name == f"{walk.name}_81f"
        assert (clip.walk_seed, clip.world_offset, clip.index, clip.kind) == (walk.walk_seed, walk.world_offset,
                                                                              walk.index, walk.kind)  # fmt: skip
    resolved = ee.resolve_clip(long[0], 0.05, 1.2)
    assert resolved.c2w.shape == (81, 4, 4)
    assert trajectory_clearance(resolved.world, resolved.c2w) >= DEFAULT_MARGIN
    with pytest.raises(UserInputError, match="at least 2 frames"):
        es.clip_specs(1)


def test_score_renders_the_ground_truth_at_the_clips_size(es, tmp_path, capsys):
    """A label holding the renders themselves, at a size other than the embedded model's, scores
    as the ground truth does: PSNR at the cap, the same poses (one estimator, one video)."""
    settings = WorldModel.load(None, device="cpu").settings
    spec = es.clip_specs(33)[0]
    clip = es.ee.resolve_clip(spec, settings.translation_speed, settings.rotation_speed_deg)
    size = (48, 64)
    assert size != (settings.height, settings.width)
    np.savez_compressed(tmp_path / "gt.npz", **{spec.name: es.ground_truth(clip, size, settings.fov_deg)})
    meta = {"model": "renders", "mode": "-", "steps": 0, "timesteps": [], "camera_cfg": 0, "device": "cpu",
            "generate_s": 0.0, "clips": 1, "frames": 33}  # as `generate` writes it
    (tmp_path / "gt.json").write_text(json.dumps({"label": "gt", **meta}))
    assert es.main(["score", "--clips", str(tmp_path), "--workers", "1", "--strips", "0", "--out", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    (row,) = report["rows"]
    assert row["gt"]["psnr"] == PSNR_CAP_DB
    for key in ("rot_err_deg", "trans_err_rel", "pose_failed"):
        assert row["gt"][key] == row[es.ee.REFERENCE][key]

    np.savez_compressed(tmp_path / "small.npz", **{spec.name: es.ground_truth(clip, (32, 32), settings.fov_deg)})
    (tmp_path / "small.json").write_text(json.dumps({"label": "small", **meta}))
    assert es.main(["score", "--clips", str(tmp_path), "--out", str(tmp_path / "r2")]) == 2
    assert "several sizes" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()
