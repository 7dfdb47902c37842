"""`sanawm train`: train the compact VAE or the DiT, or distill a model into a few-step student
(one process, or every process under torchrun).

    sanawm train --stage vae --out runs/vae --steps 4000
    sanawm train --stage dit --out runs/dit --vae runs/vae/vae --steps 20000 --resume
    torchrun --nproc-per-node 8 -m sanawm train --stage dit --strategy fsdp --config big.json --out runs/big
    sanawm train --stage distill-ode --teacher runs/dit/model --out runs/ode --config ode.json
    sanawm train --stage distill-dmd --teacher runs/dit/model --student runs/ode/model --out runs/dmd

Settings come from the stage's defaults (`sanawm.train.config.stage_defaults`), then
`--config FILE` (JSON), then the flags. The run folder gets config.json, metrics.jsonl,
checkpoints/ and the result: `vae/` (VAE stage) or `model/` (DiT and distillation stages: a
model folder for `sanawm generate --model`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from sanawm.errors import UserInputError
from sanawm.train.config import DISTILL_STAGES, STAGES


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"size must look like 128x128 (HxW), got {text!r}")
    return int(parts[0]), int(parts[1])


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the compact VAE or the DiT, or distill a model into a few-step student",
        description="Train the compact VAE (--stage vae) or the stage-1 DiT on a trained VAE's latents "
        "(--stage dit), on procedural worlds (default) or a folder of clips (NAME.mp4 + NAME.camera.npz "
        "or RealEstate10K NAME.txt); or distill a model folder into a few-step streaming student "
        "(--stage distill-ode, then --stage distill-dmd). Runs unchanged under torchrun on several GPUs.",
    )
    p.add_argument("--stage", choices=STAGES, help="what to train (default: the config's, else dit)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics.jsonl, the result)")
    p.add_argument("--config", help="JSON file with settings (see sanawm.train.config)")
    p.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                   help="continue the run in --out (or from the given checkpoint folder)")  # fmt: skip
    p.add_argument("--steps", type=int, help="total optimizer steps")
    p.add_argument("--device", help="torch device (default: this rank's GPU if any, else cpu)")
    p.add_argument("--batch-size", type=int, help="clips per step and process")
    p.add_argument("--global-batch-size", type=int,
                   help="clips per step over all processes (the same run on any number of GPUs)")  # fmt: skip
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--seed", type=int, help="run seed (data, noise, initial weights)")
    p.add_argument("--data", metavar="procedural|FOLDER", help="'procedural' or a folder of clips")
    p.add_argument("--frames", type=int, help="frames per training clip")
    p.add_argument("--size", type=_size, help="training frame size HxW")
    p.add_argument("--workers", type=int, help="data worker processes")
    p.add_argument("--pool", type=int, help="replay pool size (0: every batch fresh)")
    p.add_argument("--vae", help="DiT stage: the trained VAE folder")
    p.add_argument("--preset", help="DiT stage: model preset (sanawm.model.PRESETS)")
    p.add_argument("--init-from", help="DiT stage: model folder whose weights start the run")
    p.add_argument("--teacher", help="distill stages: the teacher's model folder")
    p.add_argument("--student", help="distill stages: model folder that starts the student (default: the teacher)")
    p.add_argument("--strategy", choices=("ddp", "fsdp"), help="multi-GPU wrapping under torchrun")
    p.add_argument("--precision", choices=("bf16", "fp32"), help="bf16: bfloat16 autocast on CUDA")
    p.add_argument("--grad-checkpointing", action="store_true", default=None, help="recompute activations")
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop with a checkpoint before this")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """Defaults of the stage (`stage_defaults`) <- --config file <- flags."""
    from sanawm.jsonfile import read_json_object
    from sanawm.train.config import load_config, stage_defaults

    stage = args.stage or (read_json_object(Path(args.config), "config file").get("stage") if args.config else None)
    base = stage_defaults(stage if stage in STAGES else "dit")
    cfg = load_config(args.config, base) if args.config else base
    replace = dataclasses.replace
    if args.stage:
        cfg = replace(cfg, stage=args.stage)
    run = {k: v for k, v in dict(
        steps=args.steps, device=args.device, batch_size=args.batch_size, seed=args.seed,
        global_batch_size=args.global_batch_size,
        strategy=args.strategy, precision=args.precision, grad_checkpointing=args.grad_checkpointing,
        time_budget_s=args.time_budget,
    ).items() if v is not None}  # fmt: skip
    if args.no_progress:
        run["progress"] = False
    cfg = replace(cfg, run=replace(cfg.run, **run))
    if args.lr is not None:
        cfg = replace(cfg, optim=replace(cfg.optim, lr=args.lr))
    data = {}
    if args.data is not None:
        if args.data == "procedural":
            data["source"] = "procedural"
        else:
            data["source"] = "folder"
            data["folder"] = replace(cfg.data.folder, root=args.data)
    if args.frames is not None:
        data["num_frames"] = args.frames
    if args.size is not None:
        data["height"], data["width"] = args.size
    if args.workers is not None:
        data["workers"] = args.workers
    if args.pool is not None:
        data["pool_size"] = args.pool
    cfg = replace(cfg, data=replace(cfg.data, **data))
    dit = {k: v for k, v in dict(vae=args.vae, preset=args.preset, init_from=args.init_from).items() if v is not None}
    if dit and cfg.stage != "dit":
        raise UserInputError(f"--{next(iter(dit)).replace('_', '-')} only applies to --stage dit")
    cfg = replace(cfg, dit=replace(cfg.dit, **dit))
    distill = {k: v for k, v in dict(teacher=args.teacher, student_init=args.student).items() if v is not None}
    if distill and cfg.stage not in DISTILL_STAGES:
        flag = {"teacher": "--teacher", "student_init": "--student"}[next(iter(distill))]
        raise UserInputError(f"{flag} only applies to the distill stages")
    cfg = replace(cfg, distill=replace(cfg.distill, **distill))
    return cfg.validate()


def run(args: argparse.Namespace) -> int:
    from sanawm.train import format_summary, train
    from sanawm.train.checkpoint import find_checkpoint
    from sanawm.train.distributed import setup, teardown

    cfg = build_config(args)
    ctx = setup(cfg.run.device)
    if args.resume == "latest" and ctx.is_main and find_checkpoint(Path(args.out), "latest") is None:
        print(f"sanawm train: no checkpoint in {args.out} yet; starting at step 0", file=sys.stderr)
    try:
        summary = train(cfg, args.out, resume=args.resume)
    finally:
        teardown()
    if ctx.is_main:
        print(format_summary([summary]))
    return 0
