"""`sanawm generate` end to end on a tiny random model folder, and every bad input -> exit 2."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from _tiny_models import make_text_free_model_dir

from sanawm.camera import action_to_c2w, load_trajectory
from sanawm.cli import main
from sanawm.video import read_video


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_text_free_model_dir(tmp_path_factory.mktemp("models") / "tiny")


@pytest.mark.parametrize("mode", ["bidirectional", "streaming"])
def test_generate_writes_the_video_and_its_cameras(model_dir, tmp_path, capsys, mode):
    out = tmp_path / "clip.mp4"
    code = main(["generate", "--model", str(model_dir), "--action", "w-4,j-4", "--mode", mode,
                 "--seed", "3", "--out", str(out)])  # fmt: skip
    assert code == 0
    frames, fps = read_video(out)
    assert frames.shape == (9, 32, 48, 3) and fps == 8.0
    cameras = load_trajectory(tmp_path / "clip.camera.npz")
    assert cameras.image_size == (32, 48)
    np.testing.assert_allclose(cameras.c2w.numpy(), action_to_c2w("w-4,j-4").numpy(), atol=1e-6)
    printed = capsys.readouterr()
    assert str(out) in printed.out and str(tmp_path / "clip.camera.npz") in printed.out


def test_cuda_graphs_on_the_cpu_stream_eagerly_with_a_note(model_dir, tmp_path, capsys):
    argv = ["generate", "--model", str(model_dir), "--action", "w-4,j-4", "--mode", "streaming", "--steps", "2",
            "--device", "cpu"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "eager.mp4")]) == 0
    capsys.readouterr()
    assert main([*argv, "--cuda-graphs", "--out", str(tmp_path / "graphs.mp4")]) == 0
    assert "--cuda-graphs needs CUDA" in capsys.readouterr().err
    np.testing.assert_array_equal(read_video(tmp_path / "graphs.mp4")[0], read_video(tmp_path / "eager.mp4")[0])


def test_generate_from_a_trajectory_file_and_an_image(model_dir, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.full((20, 30, 3), 200, dtype=np.uint8)).save(tmp_path / "in.png")
    np.save(tmp_path / "path.npy", action_to_c2w("d-12").numpy())
    out = tmp_path / "out.mp4"
    code = main(["generate", "--model", str(model_dir), "--image", str(tmp_path / "in.png"),
                 "--trajectory", str(tmp_path / "path.npy"), "--frames", "11", "--steps", "1",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    assert read_video(out)[0].shape[0] == 9
    err = capsys.readouterr().err
    assert "generating 9 frames" in err  # the note about rounding 11 down


def test_generate_with_the_v2_keys_and_nearest_rounding(model_dir, tmp_path, capsys):
    out = tmp_path / "v2.mp4"
    # the VAE makes 4k+1 frames; 16 of the 17 poses asked for: 17 is nearer than 13 and within them
    code = main(["generate", "--model", str(model_dir), "--action", "wa-16", "--keys", "v2", "--frames", "16",
                 "--frames-rounding", "nearest", "--steps", "1", "--out", str(out)])  # fmt: skip
    assert code == 0
    assert read_video(out)[0].shape[0] == 17
    assert "generating 17 frames" in capsys.readouterr().err
    cameras = load_trajectory(tmp_path / "v2.camera.npz")
    want = action_to_c2w("wa-16", 0.05, 1.2, keys="v2")  # the model's speeds, v2 layout
    np.testing.assert_allclose(cameras.c2w.numpy(), want.numpy(), atol=1e-6)


def _run(argv):
    """`sanawm` in-process: the exit code, whether from `main` or from argparse's SystemExit."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def _write_bad_files(tmp, model_dir):
    (tmp / "broken.png").write_text("no image here")
    np.save(tmp / "wrong_shape.npy", np.zeros((9, 3, 3), dtype=np.float32))
    np.save(tmp / "short.npy", action_to_c2w("w-4").numpy())
    shutil.copytree(model_dir, tmp / "no_vae")
    doc = json.loads((tmp / "no_vae" / "model.json").read_text())
    del doc["components"]["vae"]
    (tmp / "no_vae" / "model.json").write_text(json.dumps(doc))


# case: (arguments, text the error line must contain); {tmp} is a folder of prepared bad files.
BAD_INPUTS = {
    "unknown action key": (["--action", "w-4,x-4"], "x-4"),
    "zero duration": (["--action", "w-0"], "w-0"),
    "missing image": (["--action", "w-8", "--image", "{tmp}/nope.png"], "image not found"),
    "unreadable image": (["--action", "w-8", "--image", "{tmp}/broken.png"], "cannot read the image"),
    "missing trajectory": (["--trajectory", "{tmp}/nope.npz"], "trajectory file not found"),
    "wrong trajectory shape": (["--trajectory", "{tmp}/wrong_shape.npy"], "c2w"),
    "trajectory shorter than --frames": (["--trajectory", "{tmp}/short.npy", "--frames", "9"], "fewer than the 9"),
    "zero frames": (["--action", "w-8", "--frames", "0"], "frame count"),
    "too few frames": (["--action", "w-8", "--frames", "3"], "too short"),
    "zero steps": (["--action", "w-8", "--steps", "0"], "steps"),
    "negative camera cfg": (["--action", "w-8", "--camera-cfg", "-2"], "camera_cfg"),
    "missing model": (["--action", "w-8", "--model", "{tmp}/nothing"], "model folder not found"),
    "model without vae": (["--action", "w-8", "--model", "{tmp}/no_vae"], "vae component is missing"),
    "not an mp4": (["--action", "w-8", "--out", "{tmp}/out/clip.avi"], ".mp4"),
    "missing output folder": (["--action", "w-8", "--out", "{tmp}/out/sub/clip.mp4"], "output folder"),
    "action and trajectory": (["--action", "w-8", "--trajectory", "{tmp}/short.npy"], "not allowed"),
    "no camera path": ([], "required"),
    "frames not a number": (["--action", "w-8", "--frames", "many"], "invalid int"),
    "unknown device": (["--action", "w-8", "--device", "warp-drive"], "unknown device"),
    "keys without an action": (["--trajectory", "{tmp}/short.npy", "--keys", "v2"], "--keys only applies"),
    "unknown key layout": (["--action", "w-8", "--keys", "v3"], "invalid choice"),
    "unknown frame rounding": (["--action", "w-8", "--frames-rounding", "up"], "invalid choice"),
    "fp8 on the cpu": (["--action", "w-8", "--device", "cpu", "--fp8"], "--fp8 needs a CUDA GPU"),
    "flash4 on the cpu": (["--action", "w-8", "--device", "cpu", "--attention", "flash4"], "needs a CUDA GPU"),
    "fp8 attention on the cpu": (["--action", "w-8", "--device", "cpu", "--attention", "fp8"], "--attention fp8"),
    "cuda graphs bidirectional": (["--action", "w-8", "--mode", "bidirectional", "--cuda-graphs"], "streaming only"),
    "context noise bidirectional": (["--action", "w-8", "--mode", "bidirectional", "--context-sigma", "0.1"],
                                    "streaming only"),
    "context noise of 1": (["--action", "w-8", "--mode", "streaming", "--context-sigma", "1"], "context_sigma"),
    "negative context noise": (["--action", "w-8", "--mode", "streaming", "--context-sigma", "-0.1"], "context_sigma"),
}


@pytest.fixture(scope="module")
def bad_files(model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    _write_bad_files(tmp, model_dir)
    return tmp


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_no_files(model_dir, bad_files, capsys, case):
    args, message = BAD_INPUTS[case]
    out_dir = bad_files / "out"
    out_dir.mkdir(exist_ok=True)
    argv = ["generate", "--model", str(model_dir), "--out", str(out_dir / "clip.mp4")]
    argv += [a.replace("{tmp}", str(bad_files)) for a in args]  # later --model / --out win
    assert _run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert message in err
    assert list(out_dir.iterdir()) == []


def test_installed_command_reports_bad_input_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sanawm", "generate", "--action", "w-8", "--model", str(tmp_path / "none"),
         "--out", str(tmp_path / "x.mp4")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"sanawm generate: error: model folder not found: {tmp_path / 'none'}"]
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize("error", [RuntimeError("boom inside the sampler"), AssertionError("bad shape inside")])
def test_internal_errors_keep_their_traceback(model_dir, tmp_path, monkeypatch, capsys, error):
    """A bug deep inside (here: raised by the sampler's denoising loop) is not user input: the CLI
    neither turns it into exit 2 nor hides its traceback."""
    import sanawm.sampling.sampler as sampler

    def broken_denoise(*args, **kwargs):
        raise error

    monkeypatch.setattr(sampler, "_denoise", broken_denoise)
    argv = ["generate", "--model", str(model_dir), "--action", "w-4", "--steps", "1", "--out", str(tmp_path / "c.mp4")]
    with pytest.raises(type(error), match=str(error)) as info:
        main(argv)
    assert any(entry.name == "broken_denoise" for entry in info.traceback)  # raised where it happened
    assert "error:" not in capsys.readouterr().err  # no one-line user-error message was printed


def test_a_shape_bug_inside_the_model_is_not_a_user_error(model_dir, tmp_path, monkeypatch):
    """Before the model's checks became asserts, this bug (a raymap one column short, as a broken
    camera packing would make it) surfaced as `exit 2` with a one-line "user error"."""
    import sanawm.pipeline as pipeline

    pack = pipeline.pack_camera

    def broken_pack(*args, **kwargs):
        raymap, plucker = pack(*args, **kwargs)
        return raymap[..., :-1], plucker

    monkeypatch.setattr(pipeline, "pack_camera", broken_pack)
    argv = ["generate", "--model", str(model_dir), "--action", "w-4", "--steps", "1", "--out", str(tmp_path / "c.mp4")]
    with pytest.raises(AssertionError, match="raymap must be"):
        main(argv)


INTERRUPTED_RUN = """
import os, sys
from sanawm.pipeline import WorldModel

chunks = WorldModel.stream

def stream_then_die(self, *args, **kwargs):
    for i, frames in enumerate(chunks(self, *args, **kwargs)):
        if i == 2:  # two chunks are in the file; die like a killed process (no cleanup)
            os._exit(3)
        yield frames

WorldModel.stream = stream_then_die
from sanawm.cli import main
main(sys.argv[1:])
"""


def test_interrupted_streaming_run_leaves_a_playable_video(model_dir, tmp_path):
    out = tmp_path / "partial.mp4"
    proc = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_RUN, "generate", "--model", str(model_dir), "--action", "w-20",
         "--mode", "streaming", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    frames, _ = read_video(out)
    # Chunks of 5 and 4 frames were written; the encoder may still hold the very last one.
    assert 8 <= frames.shape[0] <= 9 and frames.shape[1:] == (32, 48, 3)
    # The camera file is rewritten after every chunk: it lists the 9 frames written, not the 21 planned.
    assert load_trajectory(tmp_path / "partial.camera.npz").num_frames == 9
