"""What `generate`, `render` and `traj` do with their outputs before and after the work: they
refuse to replace files (unless --overwrite) or to write where they cannot, refuse clips that
do not fit in memory, announce long streaming runs, and leave a camera file that matches the
video after an interrupt."""

from pathlib import Path

import numpy as np
import pytest
from _tiny_models import make_text_free_model_dir

import sanawm.pipeline
from sanawm.camera import load_trajectory
from sanawm.cli import main
from sanawm.cli.generate import format_duration
from sanawm.pipeline import WorldModel
from sanawm.video import read_video


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_text_free_model_dir(tmp_path_factory.mktemp("models") / "tiny")


def _run(argv):
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


COMMANDS = {
    "generate": (["generate", "--model", "{model}", "--action", "w-8", "--out", "{tmp}/a.mp4"],
                 ["a.mp4", "a.camera.npz"]),
    "render": (["render", "--world-seed", "1", "--action", "w-3", "--size", "16x16", "--out", "{tmp}/a.mp4"],
               ["a.mp4", "a.camera.npz"]),
    "traj": (["traj", "--action", "w-3", "--out", "{tmp}/a.json", "--plot", "{tmp}/a.png"], ["a.json", "a.png"]),
}  # fmt: skip


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("existing", [0, 1])
def test_existing_outputs_are_kept_unless_overwrite(model_dir, tmp_path, capsys, command, existing):
    args, outputs = COMMANDS[command]
    argv = [a.format(model=model_dir, tmp=tmp_path) for a in args]
    (tmp_path / outputs[existing]).write_bytes(b"earlier result")
    assert _run(argv) == 2
    err = _one_error_line(capsys)
    assert str(tmp_path / outputs[existing]) in err and "--overwrite" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [outputs[existing]]
    assert (tmp_path / outputs[existing]).read_bytes() == b"earlier result"

    assert _run([*argv, "--overwrite"]) == 0
    assert all((tmp_path / name).is_file() for name in outputs)
    assert (tmp_path / outputs[existing]).read_bytes() != b"earlier result"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, a folder no one can create files in")
@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unwritable_output_fails_before_any_work(model_dir, tmp_path, capsys, monkeypatch, command):
    args, _ = COMMANDS[command]
    argv = [a.format(model=model_dir, tmp="/proc/self") for a in args]
    monkeypatch.setattr(WorldModel, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    assert _run(argv) == 2
    assert "cannot write /proc/self/a." in _one_error_line(capsys)


def test_two_outputs_naming_one_file_are_refused(tmp_path, capsys):
    out = str(tmp_path / "a.npz")
    assert _run(["traj", "--action", "w-3", "--out", out, "--plot", out]) == 2
    assert "same file" in _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_a_clip_too_large_for_memory_is_refused_before_generation(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sanawm.pipeline, "available_memory", lambda device: 50_000_000)
    monkeypatch.setattr(sanawm.pipeline, "sample_bidirectional", lambda *a, **k: pytest.fail("sampling started"))
    out = tmp_path / "long.mp4"
    assert _run(["generate", "--model", str(model_dir), "--action", "w-4000", "--out", str(out)]) == 2
    err = _one_error_line(capsys)
    assert "4001 frames need about" in err and "--mode streaming" in err
    # The largest count it names does fit; 4 frames more do not.
    fits = int(err.split("at most ")[1].split()[0])
    assert 9 <= fits < 4001
    wm = WorldModel.load(model_dir, device="cpu")
    for frames, ok in ((fits, True), (fits + 4, False)):
        request = wm.prepare(action=f"w-{frames - 1}")
        if ok:
            wm.check_resources(request)
        else:
            with pytest.raises(sanawm.UserInputError):
                wm.check_resources(request)
    assert list(tmp_path.iterdir()) == []


def test_a_long_streaming_run_says_how_long_first(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(WorldModel, "_time_chunk_forward", lambda self, shape: 30.0)
    out = tmp_path / "s.mp4"
    assert _run(["generate", "--model", str(model_dir), "--action", "w-8", "--mode", "streaming",
                 "--out", str(out)]) == 0  # fmt: skip
    err = capsys.readouterr().err
    note = [line for line in err.splitlines() if "will take" in line]
    # 9 frames = 3 latent frames = 2 chunks of 1, 2 steps, no guidance: 4 chunk forwards of 30 s
    # plus attention to the cache, so just over 2 minutes: below the threshold. Make it longer.
    assert note == []
    monkeypatch.setattr(WorldModel, "_time_chunk_forward", lambda self, shape: 600.0)
    assert _run(["generate", "--model", str(model_dir), "--action", "w-8", "--mode", "streaming",
                 "--out", str(out), "--overwrite"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    note = [line for line in err.splitlines() if "will take" in line]
    assert len(note) == 1 and "about 40 min" in note[0] and "2 chunks x 2 steps" in note[0]


def test_durations_read_naturally():
    assert format_duration(30) == "about 1 min"
    assert format_duration(2400) == "about 40 min"
    assert format_duration(9000) == "about 2.5 h"
    assert format_duration(300 * 3600 + 100) == "about 300 h"


def _interrupting_stream(error: BaseException, after_chunks: int):
    stream = WorldModel.stream

    def stream_then_fail(self, *args, **kwargs):
        for i, frames in enumerate(stream(self, *args, **kwargs)):
            if i == after_chunks:
                raise error
            yield frames

    return stream_then_fail


@pytest.mark.parametrize("error, code", [(KeyboardInterrupt(), 130), (RuntimeError("a bug"), None)])
def test_after_an_interrupt_the_camera_file_lists_the_frames_in_the_video(model_dir, tmp_path, monkeypatch,
                                                                          error, code):  # fmt: skip
    monkeypatch.setattr(WorldModel, "stream", _interrupting_stream(error, after_chunks=3))
    out = tmp_path / "cut.mp4"
    argv = ["generate", "--model", str(model_dir), "--action", "w-20", "--mode", "streaming", "--out", str(out)]
    if code is None:  # a bug keeps its traceback
        with pytest.raises(RuntimeError, match="a bug"):
            main(argv)
    else:
        assert main(argv) == code
    frames, _ = read_video(out)
    cameras = load_trajectory(tmp_path / "cut.camera.npz")
    # chunks of 5, 4 and 4 frames were written before the interrupt (21 planned)
    assert frames.shape[0] == cameras.num_frames == 13


def test_interrupt_before_any_frame_leaves_nothing(model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(WorldModel, "stream", _interrupting_stream(KeyboardInterrupt(), after_chunks=0))
    argv = ["generate", "--model", str(model_dir), "--action", "w-20", "--mode", "streaming",
            "--out", str(tmp_path / "cut.mp4")]  # fmt: skip
    assert main(argv) == 130
    assert list(tmp_path.iterdir()) == []


def test_small_messages(tmp_path, capsys):
    assert _run(["render", "--world-seed", "0", "--action", "w-1", "--size", "0x0", "--out", str(tmp_path / "x.mp4")]) == 2
    assert "must be positive" in _one_error_line(capsys)
    garbage = tmp_path / "g.npz"
    garbage.write_bytes(np.random.default_rng(0).bytes(300))
    assert _run(["traj", "--from", str(garbage), "--out", str(tmp_path / "o.npz")]) == 2
    err = _one_error_line(capsys)
    assert "is not a camera file" in err and "pickle" not in err
    assert _run(["--version"]) == 0
    assert capsys.readouterr().out.startswith("sanawm ")
