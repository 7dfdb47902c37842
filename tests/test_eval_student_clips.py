"""scripts/eval_student.py's clip sets: the 32 clips at 33 frames, the 16 random walks at any other length."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from sanawm.errors import UserInputError
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
