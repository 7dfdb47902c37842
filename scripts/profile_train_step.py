"""Where one step of embedded-model DiT training spends its time, part by part.

    python scripts/profile_train_step.py                  # H100: the embedded recipe, batch 32
    python scripts/profile_train_step.py --device cpu --batch-size 2 --fresh 1 --iters 1   # smoke

Times (median of --iters, after one untimed call): preparing `--fresh` new clips (world + path,
CPU), rendering them, VAE-encoding them, and one optimizer step of the DiT (forward, backward,
AdamW), bidirectional and chunk-causal; --kernels N lists the top GPU kernels of one step.
Prints a table; the sum of the data parts and one step is what a training step costs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sanawm.benchmark import time_call
from sanawm.train.data import ProceduralClips
from sanawm.train.distributed import setup
from sanawm.train.dit import DiTTask
from sanawm.train.embedded import embedded_dit_config
from sanawm.train.loop import param_groups, step_generators

ASSETS = Path(__file__).resolve().parent.parent / "src" / "sanawm" / "assets" / "embedded"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--fresh", type=int, default=4, help="new clips per step")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--kernels", type=int, default=0, help="also list the top N ops of one eager step")
    args = parser.parse_args()

    ctx = setup(args.device)
    device = ctx.device
    cfg = embedded_dit_config(str(ASSETS / "vae"), args.batch_size, workers=0, pool_size=args.batch_size)
    task = DiTTask(cfg, ctx)
    source: ProceduralClips = task.feed.source
    rows: list[tuple[str, float]] = []

    def report(name: str, value: float) -> None:  # printed at once: a slow part shows where it is
        rows.append((name, value))
        print(f"{name}: {value:.4f}", flush=True)

    draws = iter(range(10**9))
    prepared = []

    def prepare():
        prepared[:] = [source.prepare(next(draws)) for _ in range(args.fresh)]

    report(f"prepare {args.fresh} clips (CPU, 1 process)", time_call(prepare, device, 1, args.iters))
    batch_holder = {}

    def render():
        batch_holder["clips"] = source.finish(prepared, device)

    report(f"render {args.fresh} clips ({source.num_frames} frames each)", time_call(render, device, 1, args.iters))

    def encode():
        batch_holder["encoded"] = task.encode(batch_holder["clips"])

    report(f"VAE-encode + pack cameras, {args.fresh} clips", time_call(encode, device, 1, args.iters))

    # A full batch from the pool, as training sees it.
    encoded = task.encode(source.finish([source.prepare(d) for d in range(args.batch_size)], device))
    model = task.module
    optimizer = torch.optim.AdamW(param_groups(model, 0.0), lr=1e-4, foreach=True)
    autocast = device.type == "cuda"
    obj = cfg.objective

    def step_fn(forward_model, causal: bool):
        def run():
            obj.causal_prob = 1.0 if causal else 0.0
            obj.camera_dropout = 0.0
            shared, local = step_generators(0, 0, 0, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss, _ = task.loss(forward_model, encoded, shared, local)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return run

    for causal in (False, True):
        name = "chunk-causal" if causal else "bidirectional"
        report(f"DiT step, batch {args.batch_size}, {name}, eager", time_call(step_fn(model, causal), device, 1, args.iters))
    if args.kernels:
        from torch.profiler import ProfilerActivity, profile

        cuda = device.type == "cuda"
        with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
            step_fn(model, False)()
            if cuda:
                torch.cuda.synchronize(device)
        key = "self_device_time_total" if cuda else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=args.kernels, max_name_column_width=60), flush=True)
    if device.type == "cuda":
        report("peak GPU memory (GB)", torch.cuda.max_memory_allocated(device) / 1e9)

    width = max(len(name) for name, _ in rows)
    print(f"{'part':<{width}}  seconds")
    for name, value in rows:
        print(f"{name:<{width}}  {value:.4f}")


if __name__ == "__main__":
    main()
