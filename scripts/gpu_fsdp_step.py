"""One FSDP2 training step of the 2.6 B DiT at 21 latent frames: memory and time (issue 16, point 3).

    torchrun --standalone --nproc_per_node 2 scripts/gpu_fsdp_step.py step --json two.json   # 2 GPUs, NCCL
    python scripts/gpu_fsdp_step.py step --json one.json                                     # 1 GPU, unwrapped
    torchrun --standalone --nproc_per_node 2 scripts/gpu_fsdp_step.py step --smoke --json s.json   # CPU, gloo
    python scripts/gpu_fsdp_step.py report --out DIR two.json one.json                      # table + fsdp_step.json

`step` trains the preset (default `sanawm-2.6b`, random weights: the from-scratch init) for
`--warmup` untimed and `--steps` timed optimizer steps, on random inputs of the official shapes:
`--latents 21x22x40` (161 frames of 704x1280 through the release's VAE strides 8, 32, 32:
18,480 tokens), 300 text tokens of width 2304, a turning, forward-moving camera (raymap and
chunk-Plücker rays from `pack_camera`). The step is the trainer's own (`DiTSteps`, the DiT
stage's loss and `StandardSteps.train_step`): flow matching with per-frame noise levels,
bf16 autocast on CUDA with float32 weights, gradient clipping, AdamW, the EMA update, gradient
checkpointing of every block (`enable_gradient_checkpointing`) and, on several processes, FSDP2
`fully_shard` per block and on the root (`distributed.wrap`); one process runs unwrapped,
as the trainer does. The global batch (`--global-batch`, default one clip per process) is
split over the processes and every clip's inputs and noise are drawn from a seed of its batch
position, so 1 and N processes train on the same clips.

Weights: built on the meta device, materialised and initialised on the CPU (the model's init
and `freeze_unused_parameters` need the whole model), then `fully_shard` moves one block at a
time to the GPU and keeps this rank's shard: no GPU ever holds the whole model
(`--init-device cuda` builds it on each GPU first, as the trainer does; faster, +10.6 GB once).

Timing: a barrier, then the step between two synchronisations, wall clock, the slowest rank
per step; the median over the timed steps is reported. Memory per rank: allocated after setup
(the weights: this rank's shard), and the peak allocated / reserved over all steps
(`torch.cuda.max_memory_allocated`: weights, gradients, AdamW and EMA state, activations).
The table goes last on stdout; `--json` (rank 0) holds everything, per step and per rank.

`--smoke`: a tiny DiT on 3x2x2 latents on the CPU (gloo), for the plumbing and the test
(tests/test_gpu_fsdp_step.py); `--save-state FILE` writes the full weights after the last step.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

STRIDES = (8, 32, 32)  # the release's VAE (temporal, height, width): 48 = 6 x 8 Plücker channels
INPUT_STREAM = 7  # seeds of the synthetic clips (`feed.position_seed` streams 0-3 are the trainer's)
SMOKE_DIT = {"depth": 2, "hidden_size": 64, "head_dim": 32, "softmax_blocks": (1,), "in_channels": 4,
             "caption_channels": 8, "max_text_len": 4}  # fmt: skip


def parse_latents(text: str) -> tuple[int, int, int]:
    from sanawm.benchmark import parse_latent_size

    return parse_latent_size(text)


def synthetic_batch(model_config, latents: tuple[int, int, int], seed: int, step: int, positions: list[int],
                    device: torch.device) -> dict[str, torch.Tensor]:  # fmt: skip
    """The `Encoded` batch of `positions` of the global batch at `step`, as the DiT feed gives it:
    random normalised latents and text states, a camera path (raymap, chunk-Plücker) and each
    position's `sample_seed`. Every draw comes from (seed, step, position), so a clip is the same
    whichever process holds it."""
    from sanawm.camera import pack_camera
    from sanawm.train.feed import SAMPLE_STREAM, position_seed

    T, H, W = latents
    cfg = model_config
    frames = STRIDES[0] * (T - 1) + 1
    height, width = H * STRIDES[1], W * STRIDES[2]
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("latents", "text_states", "raymap", "plucker")}
    for k in positions:
        g = torch.Generator().manual_seed(position_seed(seed, step, k, INPUT_STREAM))
        parts["latents"].append(torch.randn(cfg.in_channels, T, H, W, generator=g))
        parts["text_states"].append(torch.randn(cfg.max_text_len, cfg.caption_channels, generator=g))
        u = torch.rand(2, generator=g, dtype=torch.float64)
        yaw_rate, speed = 0.04 * float(u[0]) - 0.02, 0.1 * float(u[1])  # radians and units per frame
        t = torch.arange(frames, dtype=torch.float64)
        yaw = yaw_rate * t
        c2w = torch.eye(4, dtype=torch.float64).repeat(frames, 1, 1)
        c2w[:, 0, 0], c2w[:, 0, 2], c2w[:, 2, 0], c2w[:, 2, 2] = yaw.cos(), yaw.sin(), -yaw.sin(), yaw.cos()
        c2w[:, 2, 3] = speed * t
        focal = 0.5 * width / math.tan(math.radians(30.0))  # 60 degrees horizontal field of view
        raymap, plucker = pack_camera(c2w, [focal, focal, width / 2, height / 2], (height, width), STRIDES)
        parts["raymap"].append(raymap)
        parts["plucker"].append(plucker)
    batch = {k: torch.stack(v).to(device) for k, v in parts.items()}
    n = len(positions)
    batch["text_mask"] = torch.ones(n, cfg.max_text_len, dtype=torch.long, device=device)
    batch["text_present"] = torch.ones(n, dtype=torch.bool, device=device)
    batch["sample_seed"] = torch.tensor([position_seed(seed, step, k, SAMPLE_STREAM) for k in positions])
    return batch


def build_model(model_config, seed: int, device: torch.device):
    """The from-scratch init (identical on every rank: same seed), unused parameters frozen as
    the DiT stage does; on `device` (see module doc for why the CPU)."""
    from sanawm.model import SanaWMTransformer
    from sanawm.train.dit import freeze_unused_parameters

    torch.manual_seed(seed)
    model = SanaWMTransformer(model_config, device="meta").to_empty(device=device)
    model.init_weights()  # sets every parameter and buffer (to_empty leaves them undefined)
    frozen = freeze_unused_parameters(model, STRIDES)
    return model, frozen


def _local_numel(p: torch.Tensor) -> int:
    return p.to_local().numel() if hasattr(p, "to_local") else p.numel()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_command(args) -> None:
    import torch.distributed as dist

    from sanawm.model import preset_config
    from sanawm.train import from_dict
    from sanawm.train.checkpoint import full_model_state
    from sanawm.train.distributed import setup, teardown
    from sanawm.train.dit import DiTSteps
    from sanawm.train.ema import EMA
    from sanawm.train.loop import enable_gradient_checkpointing, step_generators

    if args.smoke:
        torch.set_num_threads(1)
        args.device, args.preset, args.latents = "cpu", "tiny", args.latents or (3, 2, 2)
    latents = args.latents or (21, 22, 40)
    ctx = setup(args.device)
    world, rank = ctx.world_size, ctx.rank
    global_batch = args.global_batch or world
    if global_batch % world:
        raise SystemExit(f"--global-batch {global_batch} does not split over {world} processes")
    local_batch = global_batch // world
    positions = [j * world + rank for j in range(local_batch)]  # the feed's assignment of positions
    cuda = ctx.device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # run.tf32's default

    overrides = {**(SMOKE_DIT if args.smoke else {}), **json.loads(args.overrides)}
    model_config = preset_config(args.preset, **overrides)
    # Camera on every step and chunk-causal only when asked: every timed step does the same work.
    config = from_dict({
        "objective": {"camera_dropout": 0.0, "causal_prob": 1.0 if args.causal else 0.0},
        "optim": {"lr": args.lr, "warmup_steps": 0},
        "run": {"grad_checkpointing": not args.no_checkpointing, "strategy": "fsdp", "seed": args.seed},
    })  # fmt: skip
    t0 = time.perf_counter()
    init_device = ctx.device if args.init_device == "cuda" and cuda else torch.device("cpu")
    model, frozen = build_model(model_config, args.seed, init_device)
    params_total = sum(p.numel() for p in model.parameters())
    params_trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    task = DiTSteps(config, model)
    if config.run.grad_checkpointing:
        enable_gradient_checkpointing(task.shard_units())
    wrapped = task.wrap_module(ctx, config.run.strategy)  # one process: unchanged
    if not ctx.distributed:
        model.to(ctx.device)
    optimizer = task.make_optimizer(config)
    ema = EMA(task.ema_target(), config.optim.ema_decay, config.optim.ema_warmup)
    _sync(ctx.device)
    setup_s = time.perf_counter() - t0
    local_params = sum(_local_numel(p) for p in model.parameters())
    allocated_setup = torch.cuda.memory_allocated(ctx.device) / 1e9 if cuda else None
    if cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)

    autocast = cuda and config.run.precision == "bf16"
    wrapped.train()
    rows = []
    for step in range(args.warmup + args.steps):
        batch = synthetic_batch(model_config, latents, args.seed, step, positions, ctx.device)
        shared, local = step_generators(args.seed, rank, step, ctx.device)
        _sync(ctx.device)
        ctx.barrier()
        tic = time.perf_counter()
        result = task.train_step(wrapped, optimizer, batch, shared, local, step, autocast, config.optim.grad_clip)
        if result.update_ema:
            ema.update()
        _sync(ctx.device)
        seconds = time.perf_counter() - tic
        if ctx.distributed:  # the step of the slowest rank (they wait for each other in the collectives)
            t = torch.tensor([seconds], dtype=torch.float64, device=ctx.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            seconds = float(t.item())
        row = {"step": step, "timed": step >= args.warmup, "loss": ctx.mean(float(result.loss)),
               "grad_norm": result.grad_norm, "finite": result.finite, "seconds": seconds}  # fmt: skip
        rows.append(row)
        if ctx.is_main:
            print(f"step {step}{'' if row['timed'] else ' (warm-up)'}: loss {row['loss']:.6f}, "
                  f"grad norm {row['grad_norm']:.4g}, {seconds:.3f} s", flush=True)  # fmt: skip

    mine = {"rank": rank, "local_param_numel": local_params, "allocated_after_setup_gb": allocated_setup,
            "peak_allocated_gb": torch.cuda.max_memory_allocated(ctx.device) / 1e9 if cuda else None,
            "peak_reserved_gb": torch.cuda.max_memory_reserved(ctx.device) / 1e9 if cuda else None,
            "device": torch.cuda.get_device_name(ctx.device) if cuda else platform.processor() or platform.machine()}  # fmt: skip
    ranks = [mine]
    if ctx.distributed:
        ranks = [None] * world
        dist.all_gather_object(ranks, mine)
    state = full_model_state(model, ctx) if args.save_state else None  # a collective under FSDP2
    if ctx.is_main:
        timed = [r["seconds"] for r in rows if r["timed"]]
        T, H, W = latents
        record = {
            "preset": args.preset, "overrides": overrides, "latents": [T, H, W], "tokens": T * H * W,
            "video": [STRIDES[0] * (T - 1) + 1, H * STRIDES[1], W * STRIDES[2]],
            "text_tokens": model_config.max_text_len, "world_size": world, "global_batch": global_batch,
            "batch_per_process": local_batch, "strategy": "fsdp2" if ctx.distributed else "none",
            "grad_checkpointing": config.run.grad_checkpointing, "causal": args.causal,
            "precision": "bf16 autocast, float32 weights" if autocast else "float32",
            "params_total": params_total, "params_trained": params_trained, "frozen": frozen,
            "init_device": str(init_device), "setup_s": setup_s, "torch": torch.__version__,
            "warmup_steps": args.warmup, "timed_steps": len(timed),
            "step_s_median": statistics.median(timed) if timed else None,
            "step_s_mean": statistics.fmean(timed) if timed else None,
            "all_finite": all(r["finite"] for r in rows), "steps": rows, "ranks": ranks,
        }  # fmt: skip
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
        if args.save_state:
            torch.save(state, args.save_state)
        print(table([record]))
    teardown()


def _gb(v) -> str:
    return f"{v:.1f}" if v is not None else "-"


def loss_difference(a: dict, b: dict) -> float | None:
    """Largest |loss difference| per step of two runs on the same global batch (None otherwise)."""
    if a["global_batch"] != b["global_batch"] or len(a["steps"]) != len(b["steps"]):
        return None
    return max(abs(x["loss"] - y["loss"]) for x, y in zip(a["steps"], b["steps"]))


def table(records: list[dict]) -> str:
    """One line per run: processes, batch, seconds per step, memory of the fullest rank, and
    the loss difference to the first run of the same global batch."""
    header = (f"{'run':<8} {'GPUs':>4} {'batch':>5} {'tokens':>7} {'s/step':>7} {'clips/s':>7} {'setup GB':>8} "
              f"{'peak GB':>8} {'reserved':>8} {'max|dL|':>9}  per-rank peak GB")  # fmt: skip
    lines = [header]
    for i, r in enumerate(records):
        ranks = r["ranks"]
        top = max(ranks, key=lambda x: x["peak_allocated_gb"] or 0)
        per_rank = " / ".join(_gb(x["peak_allocated_gb"]) for x in ranks)
        s = r["step_s_median"]
        rate = f"{r['global_batch'] / s:7.3f}" if s else f"{'-':>7}"
        diffs = [d for d in (loss_difference(o, r) for o in records[:i]) if d is not None]
        diff = f"{diffs[0]:9.2e}" if diffs else f"{'-':>9}"
        lines.append(f"{r.get('name', ''):<8} {r['world_size']:>4} {r['global_batch']:>5} {r['tokens']:>7} "
                     f"{s if s is not None else float('nan'):>7.3f} {rate} {_gb(top['allocated_after_setup_gb']):>8} "
                     f"{_gb(top['peak_allocated_gb']):>8} {_gb(top['peak_reserved_gb']):>8} {diff}  {per_rank}")  # fmt: skip
    r0 = records[0]
    n = r0["params_total"]
    size = f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.2f} M"
    notes = [
        (f"{r0['preset']}, {size} parameters, latents {'x'.join(map(str, r0['latents']))} (video {r0['video'][0]} "
        f"x {r0['video'][1]}x{r0['video'][2]}), {r0['text_tokens']} text tokens, {r0['precision']}, gradient "
        f"checkpointing {'on' if r0['grad_checkpointing'] else 'off'}; s/step: median of {r0['timed_steps']} steps "
        f"after {r0['warmup_steps']} warm-up (slowest rank)"),
        ("setup GB: allocated after setup (weights + EMA copy, this rank's shard); peak / reserved: over all steps, "
        "fullest rank; max|dL|: largest per-step loss difference to the run above with the same global batch"),
    ]  # fmt: skip
    bad = [r.get("name", "?") for r in records if not r["all_finite"]]
    if bad:
        notes.append(f"NON-FINITE gradients (update skipped) in {bad}")
    return "\n".join(lines + notes)


def report_command(args) -> None:
    records = []
    for path in args.runs:
        p = Path(path)
        if not p.is_file():
            print(f"{p}: missing (the run failed; see its log)")
            continue
        records.append({"name": p.stem, **json.loads(p.read_text())})
    if not records:
        raise SystemExit("no run finished")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fsdp_step.json").write_text(json.dumps(records, indent=2) + "\n")
    print(table(records))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("step", help="time training steps (every process, under torchrun for several)")
    s.add_argument("--preset", default="sanawm-2.6b")
    s.add_argument("--overrides", default="{}", help='model config fields, JSON (e.g. \'{"depth": 2, "softmax_blocks": [1]}\')')
    s.add_argument("--latents", type=parse_latents, default=None, metavar="TxHxW", help="default 21x22x40")
    s.add_argument("--global-batch", type=int, default=0, help="clips per step over all processes (0: one each)")
    s.add_argument("--warmup", type=int, default=2)
    s.add_argument("--steps", type=int, default=5, help="timed steps")
    s.add_argument("--lr", type=float, default=1e-4)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--causal", action="store_true", help="chunk-causal steps instead of bidirectional")
    s.add_argument("--no-checkpointing", action="store_true", help="keep every activation (more memory)")
    s.add_argument("--init-device", choices=("cpu", "cuda"), default="cpu")
    s.add_argument("--device", default="", help="default: this rank's GPU, else the CPU")
    s.add_argument("--json", default="", help="write the record here (rank 0)")
    s.add_argument("--save-state", default="", help="write the full weights after the last step (rank 0)")
    s.add_argument("--smoke", action="store_true", help="tiny DiT on the CPU")
    r = sub.add_parser("report", help="merge `step` records into OUT/fsdp_step.json and print the table")
    r.add_argument("--out", required=True)
    r.add_argument("runs", nargs="+")
    args = parser.parse_args(argv)
    (step_command if args.command == "step" else report_command)(args)


if __name__ == "__main__":
    main()
