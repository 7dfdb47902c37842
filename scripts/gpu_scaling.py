"""Data-parallel scaling of the embedded DiT recipe (issue 16, point 3), driven by gpu_scaling.sh.

    gpu_scaling.py train --run-dir D --steps N [--global-batch G] [--precision bf16|fp32]
                         [--resume] [--smoke]     # under torchrun, every process
    gpu_scaling.py report --work W --out OUT [--warmup 10]

`train` runs the embedded DiT recipe (`embedded_dit_config`) with a global batch that does not
depend on the number of processes (`run.global_batch_size`), logging every step; `report`
reads the runs' `metrics.jsonl` and writes `scaling.json` plus a table:

  one / two        1 and 2 processes, the same global batch, seed and data: steps/s after
                   `--warmup` steps (strong scaling: efficiency = steps/s(2) / (2 steps/s(1))),
                   and the per-step loss difference
  one_fp32         the 1-process run in float32: |bf16 - fp32| per step is the bf16 noise the
                   1-vs-2 difference is compared with
  two_then_one     two processes up to half the steps, resumed on one: loss difference to `one`
  weak             2 processes with the 1-process batch each (twice the global batch): samples/s
                   against `one` (weak scaling)

`--smoke` shrinks everything to a tiny model on 16x16 clips (CPU, gloo) to check the plumbing.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EMBEDDED_VAE = REPO / "src" / "sanawm" / "assets" / "embedded" / "vae"
TINY_DIT = {"depth": 2, "hidden_size": 64, "head_dim": 32, "softmax_blocks": [1], "caption_channels": 8,
            "max_text_len": 2}  # fmt: skip


def _tiny_vae(path: Path) -> Path:
    """A random compact VAE (4 latent channels) for the smoke mode; written once, by rank 0."""
    import torch

    from sanawm.vae import CompactVAE, CompactVAEConfig

    if not (path / "config.json").is_file() and int(os.environ.get("RANK", "0")) == 0:
        torch.manual_seed(0)
        vae = CompactVAE(CompactVAEConfig(latent_channels=4, channels=(8, 8, 8)))
        vae.set_latent_stats(torch.zeros(4), torch.ones(4))
        vae.save(path)
    return path


def config(args):
    from sanawm.train import from_dict, to_dict
    from sanawm.train.embedded import embedded_dit_config

    values = to_dict(embedded_dit_config(args.vae or str(EMBEDDED_VAE)))
    values["run"].update(
        global_batch_size=args.global_batch, steps=args.steps, log_every=1, checkpoint_every=10**9,
        progress=False, precision=args.precision, strategy=args.strategy, seed=args.seed,
    )  # fmt: skip
    if args.pool:
        values["data"]["pool_size"] = args.pool
    if args.smoke:
        values["data"].update(num_frames=9, height=16, width=16, workers=0)
        values["dit"]["overrides"] = TINY_DIT
        values["run"]["device"] = "cpu"
    return from_dict(values)


def train(args) -> None:
    import torch

    from sanawm.train import train as run_training
    from sanawm.train.distributed import teardown

    if args.smoke:
        torch.set_num_threads(1)
        args.vae = args.vae or str(_tiny_vae(Path(args.run_dir).parent / "tiny_vae"))
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # the other ranks wait for rank 0's VAE
            import torch.distributed as dist

            dist.init_process_group("gloo")
            dist.barrier()
    summary = run_training(config(args), args.run_dir, resume="latest" if args.resume else None)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{args.run_dir}: steps {summary.start_step}->{summary.end_step}, loss {summary.last_loss:.4f}")
    teardown()


def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _rate(rows: list[dict], warmup: int) -> float | None:
    """Steps per second between the log lines of step `warmup` and of the last step (of a run
    that was not resumed: `elapsed_s` restarts with every call)."""
    rows = [r for r in rows if r["step"] >= warmup]
    if len(rows) < 2:
        return None
    return (rows[-1]["step"] - rows[0]["step"]) / (rows[-1]["elapsed_s"] - rows[0]["elapsed_s"])


def _losses(rows: list[dict]) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in rows}  # a resumed run's later lines win


def _max_diff(a: dict[int, float], b: dict[int, float]) -> tuple[float | None, float | None]:
    """Largest |a - b| over the steps both have, absolute and relative to |a|."""
    steps = sorted(set(a) & set(b))
    if not steps:
        return None, None
    return max(abs(a[s] - b[s]) for s in steps), max(abs(a[s] - b[s]) / abs(a[s]) for s in steps)


def report(args) -> None:
    work, out = Path(args.work), Path(args.out)
    runs = {name: _metrics(work / name) for name in ("one", "two", "one_fp32", "two_then_one", "weak")}
    meta = json.loads((work / "meta.json").read_text()) if (work / "meta.json").is_file() else {}
    one = _losses(runs["one"])
    rate = {name: _rate(rows, args.warmup) for name, rows in runs.items() if name != "two_then_one"}
    losses = {name: [loss for _, loss in sorted(_losses(rows).items())] for name, rows in runs.items()}
    result = {"machine": meta, "warmup_steps": args.warmup, "steps_per_s": rate, "loss_diff_vs_one": {}, "losses": losses}
    for name in ("two", "two_then_one", "one_fp32"):
        absolute, relative = _max_diff(one, _losses(runs[name]))
        result["loss_diff_vs_one"][name] = {"max_abs": absolute, "max_rel": relative}
    if rate.get("one") and rate.get("two"):
        result["strong_efficiency"] = rate["two"] / (2 * rate["one"])
    if rate.get("one") and rate.get("weak"):
        result["weak_efficiency"] = rate["weak"] / rate["one"]  # twice the samples per step on 2 GPUs
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(result, indent=2) + "\n")

    def fmt(v, spec):
        return format(v, spec) if v is not None else "-".rjust(int(spec.split(".")[0] or 0))

    lines = [f"steps/s after {args.warmup} warm-up steps; loss differences to `one` over every step both ran",
             f"{'run':<14} {'steps/s':>8} {'max |dL| vs one':>16} {'rel':>9}"]
    for name in ("one", "two", "two_then_one", "one_fp32", "weak"):
        d = result["loss_diff_vs_one"].get(name, {})
        lines.append(f"{name:<14} {fmt(rate.get(name), '8.3f')} {fmt(d.get('max_abs'), '16.2e')} "
                     f"{fmt(d.get('max_rel'), '9.2e')}")  # fmt: skip
    lines.append(f"strong scaling efficiency (same global batch): {fmt(result.get('strong_efficiency'), '.1%')}; "
                 f"weak (same batch per GPU): {fmt(result.get('weak_efficiency'), '.1%')}")  # fmt: skip
    print("\n".join(lines))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--run-dir", required=True)
    t.add_argument("--steps", type=int, default=50)
    t.add_argument("--global-batch", type=int, default=32)
    t.add_argument("--pool", type=int, default=0, help="replay pool size (0: the recipe's)")
    t.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    t.add_argument("--strategy", default="ddp", choices=["ddp", "fsdp"])
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--vae", default="", help="VAE folder (default: the embedded model's)")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--smoke", action="store_true")
    r = sub.add_parser("report")
    r.add_argument("--work", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args(argv)
    (train if args.command == "train" else report)(args)


if __name__ == "__main__":
    main()
