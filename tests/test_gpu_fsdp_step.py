"""scripts/gpu_fsdp_step.py in its CPU smoke mode: two gloo processes (FSDP2, gradient
checkpointing, AdamW, EMA) train the tiny DiT on the same global batch of 2 clips as one
unwrapped process, for two steps. Both steps' losses and the weights after them must agree to
float rounding (the second loss is computed after the first update, so it checks the update
too), and each process must hold about half of the weights (the model really is sharded)."""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from _workers import free_port, spawn

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_fsdp_step.py"
ARGS = ["step", "--smoke", "--global-batch", "2", "--warmup", "1", "--steps", "1"]


def _script():
    spec = importlib.util.spec_from_file_location("gpu_fsdp_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _worker(rank: int, port: int, out: Path) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    _script().main([*ARGS, "--json", str(out / "two.json"), "--save-state", str(out / "two.pt")])


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_two_fsdp_processes_train_like_one(tmp_path):
    spawn(_worker, free_port(), tmp_path)
    threads = torch.get_num_threads()
    try:  # the one-process run in this process (the smoke mode sets one thread)
        _script().main([*ARGS, "--json", str(tmp_path / "one.json"), "--save-state", str(tmp_path / "one.pt")])
    finally:
        torch.set_num_threads(threads)
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert (one["world_size"], one["strategy"], two["world_size"], two["strategy"]) == (1, "none", 2, "fsdp2")
    assert one["grad_checkpointing"] and two["grad_checkpointing"] and one["all_finite"] and two["all_finite"]

    # Sharding: FSDP2 splits every tensor along dim 0 (padded), so each rank holds about half.
    total, local = two["params_total"], [r["local_param_numel"] for r in two["ranks"]]
    assert one["ranks"][0]["local_param_numel"] == total
    assert sum(local) >= total and max(local) < 0.6 * total, (local, total)

    # Losses: measured |difference| 1.2e-7 at step 0 and 0 at step 1 on losses of ~3.3 (a
    # different clip or noise on one rank moves them by ~1e-2).
    for a, b in zip(one["steps"], two["steps"], strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-6 * abs(a["loss"]), (a, b)

    # Weights after two AdamW steps of lr 1e-4 (each moves a weight by up to ~lr). Measured:
    # mean |difference| 2.1e-10 against a mean move of 1.5e-4, largest 8.9e-7 against 2.0e-4
    # (Adam divides by tiny gradients' own size); training on other data differs by ~the moves.
    script = _script()
    from sanawm.model import preset_config

    start = script.build_model(preset_config("tiny", **script.SMOKE_DIT), 0, torch.device("cpu"))[0].state_dict()
    w1, w2 = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert w1.keys() == w2.keys() == start.keys()
    moved = torch.cat([(w1[k] - start[k]).abs().flatten() for k in w1])
    diff = torch.cat([(w1[k] - w2[k]).abs().flatten() for k in w1])
    assert float(moved.mean()) > 5e-5, float(moved.mean())
    assert float(diff.mean()) < 1e-3 * float(moved.mean()), (float(diff.mean()), float(moved.mean()))
    assert float(diff.max()) < 0.1 * float(moved.max()), (float(diff.max()), float(moved.max()))

    script.main(["report", "--out", str(tmp_path / "report"), str(tmp_path / "two.json"), str(tmp_path / "one.json")])
    merged = json.loads((tmp_path / "report" / "fsdp_step.json").read_text())
    assert [r["name"] for r in merged] == ["two", "one"]
