"""Distil the embedded model into a few-step streaming student (issue 14), within a time budget.

    python scripts/distill_embedded.py --out "$OUT" --budget 1500      # one H200
    python scripts/distill_embedded.py --out /tmp/smoke --smoke          # tiny CPU run of the same steps

The recipe (`sanawm.train.embedded.embedded_distill_configs`, SANA-WM's published one at the
embedded size) runs three stages, each resuming its run folder when an earlier call left a
checkpoint and starting from the previous stage's result otherwise:

1. `ode`: teacher ODE trajectories (cached in RUN/ode/ode_pairs), x0 regression;
2. `dmd_warmup`: self-forcing DMD with the full stream cache, from the ODE student;
3. `dmd`: self-forcing DMD on longer clips with the bounded cache (the first chunk as a sink
   plus the last chunk: SANA-WM's `num_cached_blocks=2`), from the warm-up's generator and
   critic.

`--budget` is split over the stages that are not finished yet in proportion to their step
counts; a stage stopped by its budget resumes on the next call, or, with `--move-on` (one call
on a machine that will not come back), counts as done: the next stage starts from its result.
The last finished stage's model folder is copied to `--out/model` with `train_log.jsonl` and
`summary.txt` (the table is printed last). RUN (`--run-dir`, default `out/distill`,
git-ignored) keeps the checkpoints between calls on a machine that stays up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from sanawm.train import format_summary
from sanawm.train import from_dict, to_dict, train
from sanawm.train.checkpoint import find_checkpoint
from sanawm.train.distributed import setup, teardown
from sanawm.train.embedded import embedded_distill_configs

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "src" / "sanawm" / "assets" / "embedded"
STAGES = ("ode", "dmd_warmup", "dmd")
FINAL_COPY_S = 10.0


def _smoke(cfg):
    """Shrink a stage to seconds on a CPU (same code paths, tiny shapes)."""
    values = to_dict(cfg)
    values["data"].update(num_frames=9 if cfg.stage == "distill-ode" else 13, height=16, width=16, pool_size=2,
                          fresh_per_step=1, workers=0)  # fmt: skip
    values["run"].update(batch_size=1, log_every=1, checkpoint_every=2, steps=2)
    values["distill"].update(pairs=2, teacher_steps=4, generator_every=2)
    return from_dict(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "out/distill_export"), help="where results go")
    parser.add_argument("--run-dir", default=str(REPO / "out" / "distill"), help="checkpoints kept between calls")
    parser.add_argument("--teacher", default=str(ASSETS), help="the teacher's model folder")
    parser.add_argument("--budget", type=float, default=1500.0, help="seconds this call may take in all")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=2048, help="ODE trajectories to generate")
    parser.add_argument("--workers", type=int, default=max(0, min(8, (os.cpu_count() or 1) - 2)))
    parser.add_argument("--ode-lr", type=float, help="learning rate of the ODE stage (default: the recipe's)")
    parser.add_argument("--pool-size", type=int, default=64, help="clips in each DMD stage's replay pool")
    parser.add_argument("--move-on", action="store_true",
                        help="a stage stopped by its budget counts as done (its model starts the next stage)")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run (checks the script)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    t0 = time.monotonic()
    run_dir, out = Path(args.run_dir), Path(args.out)
    ctx = setup("cpu" if args.smoke else "")
    configs = embedded_distill_configs(str(Path(args.teacher).resolve()), args.batch_size, args.workers,
                                       pool_size=args.pool_size, pairs=args.pairs)  # fmt: skip
    if args.ode_lr is not None:
        configs[0].optim.lr = args.ode_lr
    if args.smoke:
        configs = [_smoke(c) for c in configs]
    notes = []

    def done(stage: str, cfg) -> bool:
        ckpt = find_checkpoint(run_dir / stage, "latest")
        return ckpt is not None and ckpt.name == f"step_{cfg.run.steps:07d}" and (run_dir / stage / "model").is_dir()

    summaries, last = [], None
    for i, (stage, cfg) in enumerate(zip(STAGES, configs)):
        if done(stage, cfg):
            last = stage
            continue
        if i > 0:
            if last != STAGES[i - 1]:
                break  # the previous stage is not finished: the next call continues it
            cfg.distill.student_init = str(run_dir / STAGES[i - 1] / "model")
            if (run_dir / STAGES[i - 1] / "critic").is_dir():
                cfg.distill.critic_init = str(run_dir / STAGES[i - 1] / "critic")
        left = [c.run.steps for s, c in zip(STAGES[i:], configs[i:]) if not done(s, c)]
        remaining = args.budget - (time.monotonic() - t0) - FINAL_COPY_S
        cfg.run.time_budget_s = max(remaining * cfg.run.steps / sum(left), 1.0)
        cfg.run.progress = not args.no_progress
        if args.move_on:  # saving an 8 M-parameter model takes a second, not the default 30 s reserve
            cfg.run.budget_reserve_s = min(cfg.run.budget_reserve_s, 5.0)
        summary = train(cfg, run_dir / stage, resume="latest")
        summaries.append(summary)
        if summary.stopped_by_budget and not args.move_on:
            break
        last = stage
    teardown()
    if not ctx.is_main:
        return 0

    out.mkdir(parents=True, exist_ok=True)
    lines = [format_summary(summaries)] if summaries else ["no stage ran (all finished)"]
    if last is not None:
        shutil.rmtree(out / "model", ignore_errors=True)
        shutil.copytree(run_dir / last / "model", out / "model")
        lines.append(f"student: the {last} stage's model folder -> {out / 'model'}")
    with (out / "train_log.jsonl").open("w") as log:
        for stage in STAGES:
            metrics = run_dir / stage / "metrics.jsonl"
            if metrics.is_file():
                log.write(metrics.read_text())
    lines += notes
    lines.append(f"total {time.monotonic() - t0:.0f} s of a {args.budget:.0f} s budget")
    text = "\n".join(lines)
    (out / "summary.txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
