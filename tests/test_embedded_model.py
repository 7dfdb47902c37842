"""The embedded default model that ships in the package: it loads without a folder and
generates end to end on a CPU in both modes (few steps, to keep the suite fast)."""

import numpy as np
import pytest

from sanawm.cli import main
from sanawm.pipeline import WorldModel
from sanawm.video import read_video


@pytest.fixture(scope="module")
def embedded():
    return WorldModel.load(device="cpu")


def test_embedded_model_generates_in_both_modes(embedded):
    bidirectional = embedded.generate(action="w-4,l-4", steps=3, seed=1)
    assert bidirectional.frames.shape == (9, 128, 128, 3)
    assert bidirectional.frames.dtype == np.uint8
    assert bidirectional.trajectory.c2w.shape == (9, 4, 4)

    chunks = list(embedded.stream(action="w-4,l-4", frames=9, steps=3, seed=1))
    streamed = np.concatenate([chunk.frames for chunk in chunks])
    assert len(chunks) >= 1 and streamed.shape == (9, 128, 128, 3)
    # Same image condition: the first frame is the example image through the VAE in both modes.
    assert np.abs(streamed[0].astype(int) - bidirectional.frames[0].astype(int)).mean() < 2.0


def test_embedded_model_frames_change_with_the_camera(embedded):
    still = embedded.generate(action="none-8", steps=3, seed=2).frames.astype(float)
    turning = embedded.generate(action="l-8", steps=3, seed=2).frames.astype(float)
    # Same seed and image; only the camera differs, and so must the last frame.
    assert np.abs(turning[-1] - still[-1]).mean() > 1.0


def test_cli_uses_the_embedded_model_by_default(tmp_path):
    out = tmp_path / "clip.mp4"
    assert main(["generate", "--action", "w-4,d-4", "--steps", "2", "--mode", "streaming", "--out", str(out)]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (9, 128, 128, 3) and fps == 16
    assert (tmp_path / "clip.camera.npz").is_file()


def test_shipped_settings_are_what_the_recipe_exports(embedded):
    """The embedded model folder and `sanawm.train.embedded` must not drift apart: a re-export
    by scripts/train_embedded.py would silently change what `sanawm generate` does."""
    from sanawm.train.embedded import EMBEDDED_SIZE, embedded_dit_config

    recipe = embedded_dit_config("unused-vae-dir")
    shipped = embedded.settings
    assert (shipped.height, shipped.width) == EMBEDDED_SIZE
    assert shipped.steps == recipe.export.steps
    assert shipped.camera_cfg == recipe.export.camera_cfg
    assert shipped.context_sigma == recipe.export.context_sigma
    assert shipped.fps == recipe.export.fps
    assert shipped.flow_shift == recipe.objective.sigma_shift
    assert shipped.chunk_size == recipe.objective.chunk_size


def test_embedded_fast_is_a_few_step_streaming_student_of_the_embedded_model(embedded):
    """The distilled student ships as `embedded-fast`: at most 4 steps, no guidance pass,
    streaming by default, the teacher's VAE shared (not a second copy) and int8 weights."""
    from sanawm.modeldir import INT8_SCALE, WEIGHTS, read_model_dir
    from sanawm.pipeline import _asset

    fast = WorldModel.load("embedded-fast", device="cpu")
    s = fast.settings
    assert s.steps <= 4 and len(s.timesteps) == s.steps
    assert s.camera_cfg == 1.0 and s.cfg == 1.0 and s.mode == "streaming"
    assert s.context_sigma == embedded.settings.context_sigma > 0  # streams as its teacher does
    assert (s.height, s.width, s.fps, s.chunk_size) == (128, 128, 16.0, embedded.settings.chunk_size)
    spec = read_model_dir(_asset("embedded-fast"))
    assert spec.components["vae"].resolve() == (_asset("embedded") / "vae").resolve()
    from safetensors import safe_open

    with safe_open(str(spec.components["transformer"] / WEIGHTS), "pt") as f:
        assert any(k.endswith(INT8_SCALE) for k in f.keys())
    assert fast.transformer.config == embedded.transformer.config
    # Its default mode streams: the same frames as an explicit stream.
    clip = fast.generate(action="w-4,l-4", seed=3).frames
    streamed = np.concatenate([c.frames for c in fast.stream(action="w-4,l-4", frames=9, seed=3)])
    assert clip.shape == (9, 128, 128, 3)
    np.testing.assert_array_equal(clip, streamed)


def test_cli_takes_the_bundled_student_by_name(tmp_path):
    out = tmp_path / "fast.mp4"
    assert main(["generate", "--model", "embedded-fast", "--action", "w-4", "--out", str(out)]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (5, 128, 128, 3) and fps == 16
