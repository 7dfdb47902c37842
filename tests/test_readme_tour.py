"""README.md's "A short tour" runs as printed, in order, in a fresh folder, and no command
replaces another's output.

The rules (also stated in the README):
- every line of every ```bash block of the tour is a `sanawm` command; each runs in-process
  through `sanawm.cli.main` (what the `sanawm` console script calls) with its arguments exactly
  as printed (shell-split, the trailing `# comment` dropped), in one temporary folder;
- a line whose comment starts with "needs" is not run: it needs what a CPU test machine does not
  have (official weights, a GPU, hours). The test lists those lines and checks there are only
  the expected ones, so a runnable command cannot slip out of the test;
- `photo.png` stands for the reader's own picture: the test puts one in the folder first;
- ```python blocks are not run here (the APIs they show have their own tests).
Every run command must exit 0, create at least one new file and change no earlier file; the
outputs are then checked against what the README says they are.
"""

import hashlib
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sanawm.camera import load_trajectory
from sanawm.cli import main
from sanawm.video import read_video

README = Path(__file__).resolve().parent.parent / "README.md"
SKIPPED = {  # command (as printed, without comment) -> why it cannot run on a CPU test machine
    "generate --action w-4800": "a 5-minute stream takes hours on a CPU (tests/test_streaming_session.py holds the cache bounded)",
    "generate --model models/sana-wm": "the official 2.6B weights are downloaded separately",
    "bench --frames 81 321 961": "the 2.6B preset needs a GPU",
    "train --stage distill-ode": "distillation needs a trained teacher and a GPU (tests/test_train_distill.py runs it small)",
    "train --stage dit": "a real training run needs a GPU and hours (tests/test_train_loop.py runs the command small)",
}


def tour_lines() -> list[tuple[list[str], str]]:
    """(argv after `sanawm`, comment) of every command of the tour's bash blocks, in order."""
    text = README.read_text()
    tour = text[text.index("## A short tour"):]
    tour = tour[: tour.index("\n## ", 1)]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", tour, flags=re.S):
        for line in block.splitlines():
            if not line.strip():
                continue
            command, _, comment = line.partition(" # ")
            assert "#" not in command, f"a '#' inside a command confuses the comment rule: {line}"
            argv = shlex.split(command)
            assert argv[0] == "sanawm", f"the tour holds only sanawm commands: {line}"
            commands.append((argv[1:], comment.strip()))
    return commands


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def test_the_tour_has_the_expected_commands():
    lines = tour_lines()
    skipped = [" ".join(argv) for argv, comment in lines if comment.startswith("needs")]
    assert len(skipped) == len(SKIPPED)
    for prefix in SKIPPED:
        assert sum(s.startswith(prefix) for s in skipped) == 1, prefix
    assert len(lines) - len(skipped) >= 8


def test_the_readme_tour_runs_as_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    example = Path(__file__).resolve().parent.parent / "src" / "sanawm" / "assets" / "example.png"
    with Image.open(example) as image:  # "photo.png: any picture of yours" (another size than the model's)
        image.convert("RGB").resize((200, 150)).save(tmp_path / "photo.png")

    before = _snapshot(tmp_path)
    for argv, comment in tour_lines():
        if comment.startswith("needs"):
            continue
        code = main(list(argv))
        assert code == 0, f"sanawm {' '.join(argv)} exited {code}: {capsys.readouterr().err}"
        after = _snapshot(tmp_path)
        changed = [name for name, digest in before.items() if after.get(name) != digest]
        assert not changed, f"sanawm {' '.join(argv)} replaced {changed}"
        assert len(after) > len(before), f"sanawm {' '.join(argv)} wrote nothing"
        before = after
    capsys.readouterr()
    _check_outputs(tmp_path)


def _check_outputs(tmp: Path) -> None:
    # Cameras: the action walk, and the same walk through RealEstate10K text and back.
    walk = load_trajectory(tmp / "walk.camera.npz")
    assert walk.num_frames == 71 and walk.image_size == (704, 1280)
    assert (tmp / "walk.png").read_bytes()[:4] == b"\x89PNG"
    assert len((tmp / "walk.txt").read_text().splitlines()) == 1 + 71
    back = load_trajectory(tmp / "walk_re10k.camera.npz")
    torch.testing.assert_close(back.c2w, walk.c2w, atol=1e-5, rtol=0)
    torch.testing.assert_close(back.intrinsics, walk.intrinsics, atol=1e-3, rtol=0)

    # Generating: every video has its camera file, frame for frame, at the model's 128x128.
    for name, frames in (("photo_walk", 17), ("walk_stream", 17), ("gen", 33)):
        video, fps = read_video(tmp / f"{name}.mp4")
        cameras = load_trajectory(tmp / f"{name}.camera.npz")
        assert video.shape == (frames, 128, 128, 3) and fps == 16.0, name
        assert cameras.num_frames == frames and cameras.image_size == (128, 128), name
    stream = load_trajectory(tmp / "walk_stream.camera.npz")
    torch.testing.assert_close(stream.c2w, walk.c2w[:17])

    # Worlds and evaluation: the render, its first frame, and a report on the generated walk.
    gt_video, _ = read_video(tmp / "gt.mp4")
    gt = load_trajectory(tmp / "gt.camera.npz")
    assert gt_video.shape == (33, 128, 128, 3) and gt.num_frames == 33
    start = np.asarray(Image.open(tmp / "gt_start.png"))
    assert start.shape == (128, 128, 3) and np.abs(start.astype(float) - gt_video[0]).mean() < 4.0
    torch.testing.assert_close(load_trajectory(tmp / "gen.camera.npz").c2w, gt.c2w)
    report = json.loads((tmp / "report.json").read_text())
    assert report["num_frames"] == 33 and report["reference"]["video"] == "gt.mp4"
    assert np.isfinite(report["reference"]["psnr"]) and np.isfinite(report["rot_err_deg"])
    assert (tmp / "report.png").read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((tmp / "bench_tiny.json").read_text())["rows"]
    assert [r["video_frames"] for r in rows] == [9, 17, 33] and all(r["seconds"] > 0 for r in rows)


@pytest.mark.parametrize("prefix", list(SKIPPED))
def test_skipped_commands_are_still_valid_commands(prefix):
    """The commands the tour cannot run here at least parse (right flags, right values)."""
    from sanawm.cli import build_parser

    (argv,) = [argv for argv, comment in tour_lines() if " ".join(argv).startswith(prefix)]
    build_parser().parse_args(argv)
