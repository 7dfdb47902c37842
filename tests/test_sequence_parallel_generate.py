"""`WorldModel.load(..., sequence_parallel=True)` and `sanawm generate --sequence-parallel` on
two CPU processes (gloo), as torchrun would start them: the sampled latents equal the
single-process ones, and only rank 0 writes files and prints."""

import contextlib
import datetime
import io
import os

import numpy as np
import pytest
import torch
import torch.distributed
from _tiny_models import make_text_free_model_dir
from _workers import free_port, spawn

from sanawm.cli import main
from sanawm.pipeline import WorldModel
from sanawm.sampling import sample_bidirectional, sample_streaming
from sanawm.video import read_video

ARGS = dict(action="w-4,j-4", seed=3)
TOLERANCE = 1e-5  # relative, float32


def _latents(wm: WorldModel) -> dict:
    request = wm.prepare(**ARGS)
    cond = wm._conditioning(request)
    with torch.no_grad():
        return {
            "bidirectional": sample_bidirectional(wm.transformer, cond, request.sampler),
            "streaming": torch.cat(list(sample_streaming(wm.transformer, cond, request.sampler, 1)), dim=2),
        }


def _forbidden(*args, **kwargs):
    raise AssertionError("only rank 0 writes files")


def _worker(rank: int, world: int, port: int, model_dir, out_dir) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    # A bounded timeout: a collective one rank never joins fails the test instead of hanging CI.
    torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(seconds=180))
    torch.set_num_threads(1)
    wm = WorldModel.load(model_dir, device="cpu", sequence_parallel=True)
    assert wm.transformer.sequence_parallel.world_size == 2 and wm.is_main == (rank == 0)
    torch.save(_latents(wm), out_dir / f"latents{rank}.pt")

    if rank > 0:
        import sanawm.camera
        import sanawm.video

        sanawm.video.VideoWriter = sanawm.camera.save_camera_npz = _forbidden
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # the CLI reuses the group, and leaves it at the end
        code = main(["generate", "--model", str(model_dir), "--action", ARGS["action"], "--seed", str(ARGS["seed"]),
                     "--mode", "streaming", "--device", "cpu", "--sequence-parallel",
                     "--out", str(out_dir / "sp.mp4")])  # fmt: skip
    torch.save({"code": code, "printed": printed.getvalue()}, out_dir / f"cli{rank}.pt")


def test_generate_on_two_processes_equals_one_process(tmp_path):
    model_dir = make_text_free_model_dir(tmp_path / "tiny")  # 2 heads, 4 x 6 latent pixels
    spawn(_worker, 2, free_port(), model_dir, tmp_path)

    want = _latents(WorldModel.load(model_dir, device="cpu"))
    for rank in range(2):
        got = torch.load(tmp_path / f"latents{rank}.pt")
        for mode in ("bidirectional", "streaming"):
            error = float((got[mode] - want[mode]).abs().max() / want[mode].abs().max())
            assert error < TOLERANCE, (rank, mode, error)
    assert float((want["bidirectional"] - want["streaming"]).abs().max()) > 1e-3  # the modes differ

    cli = [torch.load(tmp_path / f"cli{rank}.pt") for rank in range(2)]
    assert [c["code"] for c in cli] == [0, 0]
    assert "sp.mp4" in cli[0]["printed"] and cli[1]["printed"] == ""
    assert main(["generate", "--model", str(model_dir), "--action", ARGS["action"], "--seed", str(ARGS["seed"]),
                 "--mode", "streaming", "--device", "cpu", "--out", str(tmp_path / "one.mp4")]) == 0  # fmt: skip
    (parallel, fps), (single, _) = read_video(tmp_path / "sp.mp4"), read_video(tmp_path / "one.mp4")
    assert parallel.shape == single.shape == (9, 32, 48, 3) and fps == 8.0
    assert (tmp_path / "sp.camera.npz").is_file()
    # latents agree to ~1e-7: decoded frames differ by at most a rounding step, video coding included
    assert np.abs(parallel.astype(int) - single.astype(int)).max() <= 2


def test_a_model_whose_heads_do_not_split_is_refused(tmp_path):
    from sanawm.errors import UserInputError
    from sanawm.parallel import SequenceParallel

    wm = WorldModel.load(make_text_free_model_dir(tmp_path / "tiny"), device="cpu")  # 2 heads
    with pytest.raises(UserInputError, match="2 heads over the processes, but 2 is not divisible by 3 processes"):
        WorldModel(wm.transformer, wm.vae, wm.settings, sequence_parallel=SequenceParallel(None, 0, 3))


def test_bench_runs_sequence_parallel_in_a_world_of_one(capsys):
    """Without torchrun the flag makes a group of this one process (gloo on the CPU)."""
    assert main(["bench", "--sequence-parallel", "--preset", "tiny", "--device", "cpu", "--latents", "2x3x2",
                 "--iters", "1", "--warmup", "0"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "sequence-parallel over 1 processes" in out and "2x3x2" in out
    assert not torch.distributed.is_initialized()  # the group is left at the end
