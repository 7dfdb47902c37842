"""Two CPU processes (gloo) train the same tiny DiT with DDP and with FSDP2, each in two calls
(the second resumes the first): both strategies end at the same weights, so saving and loading
full checkpoints works under both."""

import os

import torch
from _train_fixtures import dit_config, save_tiny_vae, write_clip_folder
from _workers import free_port, spawn
from safetensors.torch import load_file


def _worker(rank: int, world: int, port: int, vae_dir, clips, out) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from sanawm.train import train

    for strategy in ("ddp", "fsdp"):
        for steps, resume in ((2, None), (3, "latest")):  # the second call resumes the first
            cfg = dit_config(
                vae_dir,
                data={"source": "folder", "folder": {"root": str(clips)}, "num_frames": 5, "pool_size": 2},
                objective={"camera_dropout": 0.5, "causal_prob": 0.5},
                optim={"lr": 1e-3, "warmup_steps": 0},
                run={"steps": steps, "batch_size": 1, "strategy": strategy, "progress": False},
            )
            summary = train(cfg, out / strategy, resume=resume)
        torch.save({"loss": summary.last_loss, "span": (summary.start_step, summary.end_step)},
                   out / f"{strategy}_rank{rank}.pt")  # fmt: skip


def test_ddp_and_fsdp_on_two_cpu_processes(tmp_path):
    vae_dir = save_tiny_vae(tmp_path / "vae")
    clips = write_clip_folder(tmp_path / "clips", clips=2, frames=9)
    spawn(_worker, 2, free_port(), vae_dir, clips, tmp_path)
    for strategy in ("ddp", "fsdp"):
        ranks = [torch.load(tmp_path / f"{strategy}_rank{r}.pt") for r in range(2)]
        assert ranks[0] == ranks[1] and ranks[0]["span"] == (2, 3)  # the logged loss is the mean over ranks

    def state(strategy, step):
        return load_file(str(tmp_path / strategy / "checkpoints" / f"step_{step:07d}" / "model.safetensors"))

    ddp, fsdp, before = state("ddp", 3), state("fsdp", 3), state("ddp", 2)
    assert ddp.keys() == fsdp.keys() == before.keys()
    # Adam moves every trained weight by about lr per step; the two strategies only differ by
    # the rounding of their gradient reductions (amplified by Adam where gradients are tiny).
    moved = torch.cat([(ddp[k] - before[k]).abs().flatten() for k in ddp])
    differ = torch.cat([(ddp[k] - fsdp[k]).abs().flatten() for k in ddp])
    assert float(moved.mean()) > 1e-4, float(moved.mean())
    # A weight whose gradient is near zero can take a full Adam step one way in one run and not in
    # the other (seen on a fresh 2-core machine: one weight 0.9 of the largest move apart), so the
    # bound is on the 99.9th percentile, not the max: a systematic error moves far more weights.
    near_max = float(torch.quantile(differ.double(), 0.999))
    print(f"ddp vs fsdp: mean {float(differ.mean() / moved.mean()):.2e}, p99.9 {near_max / float(moved.max()):.2e}")
    assert float(differ.mean()) < 1e-3 * float(moved.mean()) and near_max < 0.05 * float(moved.max())
    assert (tmp_path / "fsdp" / "model" / "model.json").is_file()
