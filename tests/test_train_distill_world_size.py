"""The distillation stages do not depend on the number of processes the global batch is split over.

One process with a global batch of 2 and two CPU processes (gloo) with 1 clip each run the ODE
stage (pair picks, snapshot picks, per-clip x0 loss) and the DMD stage ("ddp": rollout noise,
score levels and noise of the generator and critic updates, per-clip losses) for 2 steps from
the same seed: the per-step losses (the DMD generator loss too) and the weights after the 2
steps agree to float rounding. The ODE pairs each run makes itself (1 batch of 2 vs 2 batches
of 1) agree to float rounding as well. A run of 1 step on two processes resumed on one ends at
the same weights (the other direction: tests/test_train_world_size.py, for the DiT).
"""

import json
import os

import torch
from _tiny_models import make_text_free_model_dir
from _workers import free_port, spawn
from safetensors.torch import load_file

STEPS = 2


def _config(teacher, stage, steps=STEPS, **distill):
    from sanawm.train import from_dict

    return from_dict({
        "stage": stage,
        "data": {"num_frames": 9, "height": 16, "width": 16, "pool_size": 4, "fresh_per_step": 1},
        "optim": {"lr": 1e-3, "warmup_steps": 0, "betas": [0.0, 0.999]},
        "run": {"steps": steps, "global_batch_size": 2, "log_every": 1, "progress": False, "seed": 5},
        "distill": {"teacher": str(teacher), "pairs": 4, "teacher_steps": 2, "generator_every": 1,
                    "critic_lr": 1e-3, **distill},
    })  # fmt: skip


def _run_both(teacher, out, steps=STEPS, resume=None, **distill) -> None:
    from sanawm.train import train

    train(_config(teacher, "distill-ode", steps, **distill), out / "ode", resume=resume)
    train(_config(teacher, "distill-dmd", steps), out / "dmd", resume=resume)


def _worker(rank: int, port: int, teacher, out) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    _run_both(teacher, out / "two")
    # The pairs are a function of their index (to rounding): the resumed runs reuse these.
    pairs = str(out / "two" / "ode" / "ode_pairs")
    _run_both(teacher, out / "two_then_one", 1, pairs_dir=pairs)


def _metrics(run_dir, key):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return torch.tensor([json.loads(line)[key] for line in lines], dtype=torch.float64)


def _weights(run_dir, name="model.safetensors"):
    state = load_file(str(run_dir / "checkpoints" / f"step_{STEPS:07d}" / name))
    return torch.cat([v.double().flatten() for _, v in sorted(state.items())])


def _start(teacher, stage):
    """The weights the run started from, in the checkpoint's layout (DMD: generator and critic)."""
    from sanawm.modeldir import load_transformer, read_model_dir

    start = load_transformer(read_model_dir(teacher).components["transformer"]).state_dict()
    if stage == "dmd":
        start = {f"{part}.{k}": v for part in ("generator", "critic") for k, v in start.items()}
    return torch.cat([v.double().flatten() for _, v in sorted(start.items())])


def test_the_distill_stages_train_alike_on_one_and_two_processes(tmp_path):
    teacher = make_text_free_model_dir(tmp_path / "teacher", chunk_size=1, camera_cfg=2.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run_both(teacher, tmp_path / "one")
        spawn(_worker, free_port(), teacher, tmp_path)
        pairs = str(tmp_path / "two" / "ode" / "ode_pairs")
        _run_both(teacher, tmp_path / "two_then_one", STEPS, "latest", pairs_dir=pairs)
    finally:
        torch.set_num_threads(threads)

    one, two = tmp_path / "one", tmp_path / "two"
    pairs = sorted((one / "ode" / "ode_pairs").glob("pair_*.safetensors"))
    assert len(pairs) == 4
    found: dict[str, float] = {}  # every measure first, then the checks: a failure shows them all

    def worst(name: str, value: float) -> None:
        found[name] = max(found.get(name, 0.0), value)

    for path in pairs:
        a = load_file(str(path))["snapshots"]
        b = load_file(str(two / "ode" / "ode_pairs" / path.name))["snapshots"]
        worst("ode pairs", float((a - b).abs().max() / a.abs().max()))
    for stage, key in [("ode", "loss"), ("dmd", "loss"), ("dmd", "generator_loss")]:
        a = _metrics(one / stage, key)
        assert len(a) == STEPS and bool(a.isfinite().all()) and bool((a > 0).all()), (stage, key, a)
        for run in ("two", "two_then_one"):  # the resumed run's metrics: step 1 on two processes, 2 on one
            b = _metrics(tmp_path / run / stage, key)
            assert len(b) == STEPS, (run, stage, key)
            worst(f"{stage} {key}", float(((b - a) / a).abs().max()))
    for stage in ("ode", "dmd"):
        reference, ema_reference = _weights(one / stage), _weights(one / stage, "ema.safetensors")
        moved = (reference - _start(teacher, stage)).abs()
        assert float(moved.mean()) > 1e-4, (stage, float(moved.mean()))
        for run in ("two", "two_then_one"):
            differ = (_weights(tmp_path / run / stage) - reference).abs()
            ema = (_weights(tmp_path / run / stage, "ema.safetensors") - ema_reference).abs()
            worst(f"{stage} weights mean", float(differ.mean() / moved.mean()))
            worst(f"{stage} weights max", float(differ.max() / moved.max()))
            worst(f"{stage} ema max", float(ema.max() / moved.max()))
    print({k: f"{v:.2e}" for k, v in found.items()})
    # Float rounding only (batched matmuls of 1 vs 2 clips, the gradient all-reduce); measured on a
    # 2-core AMD EPYC: pairs 2.5e-7, losses 2.3e-7 / 8.8e-8 / 2.4e-7, weights mean 2.0e-6 / 1.5e-6,
    # max 1.4e-2 / 3.3e-3 (Adam divides a few tiny gradients by the root of tinier second
    # moments), EMA alike. Code that draws per process instead fails all but the pairs: losses
    # off by 0.11-0.61 relative, weights mean 0.38 / 0.76 of the update.
    bounds = {
        "ode pairs": 2e-6, "ode loss": 2e-6, "dmd loss": 1e-6, "dmd generator_loss": 2e-6,
        "ode weights mean": 2e-5, "ode weights max": 0.05, "ode ema max": 0.05,
        "dmd weights mean": 2e-5, "dmd weights max": 0.02, "dmd ema max": 0.02,
    }  # fmt: skip
    assert set(bounds) == set(found)
    assert all(found[k] < bounds[k] for k in bounds), {k: (found[k], bounds[k]) for k in bounds}
