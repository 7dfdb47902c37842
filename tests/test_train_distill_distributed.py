"""Two CPU processes (gloo) run the DMD stage with "ddp" (replicas, gradients averaged by an
explicit all-reduce) and with "fsdp" (FSDP2-sharded generator and critic), each rank on its own
clips: the replicas stay identical and both strategies end at the same weights. The ODE stage
shares the pair generation between the ranks."""

import os

import torch
from _tiny_models import make_text_free_model_dir
from _workers import free_port, spawn
from safetensors.torch import load_file


def _worker(rank: int, world: int, port: int, teacher, out) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from sanawm.train import from_dict
    from sanawm.train.distill_dmd import DMDTask
    from sanawm.train.distributed import setup
    from sanawm.train.loop import run_task

    ctx = setup("cpu")
    ode = from_dict({
        "stage": "distill-ode", "data": {"num_frames": 9, "height": 16, "width": 16},
        "run": {"steps": 1, "batch_size": 1, "progress": False},
        "distill": {"teacher": str(teacher), "pairs": 2, "teacher_steps": 2},
    })  # fmt: skip
    from sanawm.train import train

    train(ode, out / "ode")
    for strategy in ("ddp", "fsdp"):
        cfg = from_dict({
            "stage": "distill-dmd",
            "data": {"num_frames": 9, "height": 16, "width": 16, "pool_size": 2, "fresh_per_step": 0},  # 1 per rank
            "optim": {"lr": 1e-3, "warmup_steps": 0, "betas": [0.0, 0.999]},
            "run": {"steps": 1, "batch_size": 1, "strategy": strategy, "progress": False},
            "distill": {"teacher": str(teacher), "generator_every": 1, "critic_lr": 1e-3},
        }).validate()  # fmt: skip
        task = DMDTask(cfg, ctx)
        run_task(task, cfg, out / strategy, ctx, None)
        if strategy == "ddp":
            state = {k: v.detach().clone() for k, v in task.module.state_dict().items()}
            torch.save(state, out / f"ddp_rank{rank}.pt")


def test_dmd_with_ddp_and_fsdp_on_two_cpu_processes(tmp_path):
    teacher = make_text_free_model_dir(tmp_path / "teacher", chunk_size=1)
    spawn(_worker, 2, free_port(), teacher, tmp_path)
    replicas = [torch.load(tmp_path / f"ddp_rank{r}.pt") for r in range(2)]
    assert all(torch.equal(replicas[0][k], replicas[1][k]) for k in replicas[0])

    def state(strategy):
        return load_file(str(tmp_path / strategy / "checkpoints" / "step_0000001" / "model.safetensors"))

    ddp, fsdp = state("ddp"), state("fsdp")
    from sanawm.modeldir import load_transformer, read_model_dir

    start = load_transformer(read_model_dir(teacher).components["transformer"]).state_dict()
    keys = [k for k in ddp if k.split(".", 1)[1] in start and ddp[k].is_floating_point()]
    moved = torch.cat([(ddp[k] - start[k.split(".", 1)[1]]).abs().flatten() for k in keys])
    differ = torch.cat([(ddp[k] - fsdp[k]).abs().flatten() for k in keys])
    assert float(moved.mean()) > 1e-4, float(moved.mean())
    # The strategies differ only by the rounding of their gradient reductions (amplified by Adam
    # where gradients are tiny).
    assert float(differ.mean()) < 1e-3 * float(moved.mean()) and float(differ.max()) < 0.05 * float(moved.max())
    assert (tmp_path / "fsdp" / "model" / "model.json").is_file()
    assert sorted(p.name for p in (tmp_path / "ode" / "ode_pairs").glob("pair_*")) == [
        "pair_0000000.safetensors", "pair_0000001.safetensors"]  # fmt: skip
    assert (tmp_path / "ode" / "model" / "model.json").is_file()
