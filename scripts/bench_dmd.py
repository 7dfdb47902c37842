"""Time one self-forcing DMD iteration (generator update + critic update) and its peak memory.

    python scripts/bench_dmd.py                  # 2.6B preset, 21 latent frames of 22x40 (704x1280), CUDA
    python scripts/bench_dmd.py --grad-checkpointing --latent 21x22x40 --json dmd.json
    python scripts/bench_dmd.py --tiny           # tiny preset on CPU (smoke test of this script)

What `sanawm train --stage distill-dmd` runs per generator step, on random weights (the
from-scratch init): the generator and the critic train with float32 weights, bf16 autocast on
CUDA and AdamW (betas (0, 0.999)); the real score is a frozen bf16 copy with camera guidance 1
(one call). The rollout runs to the last of the 4 student steps in every chunk (the longest
rollout; training draws the exit step), chunks of `--chunk-size` latent frames, full stream
cache. Prints a table: latent size, chunks, seconds for the generator update, the critic
update, the iteration, and peak memory.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from sanawm.benchmark import camera_inputs, parse_latent_size, peak_memory_gb, random_model, reset_peak_memory
from sanawm.chunks import chunk_starts_for
from sanawm.device import choose_device
from sanawm.sampling.schedule import FlowMatchingSchedule
from sanawm.train.distill_dmd import DMDObjective
from sanawm.train.loop import enable_gradient_checkpointing, param_groups
from sanawm.train.teacher import Condition

TIMESTEPS = (1000.0, 967.0, 908.0, 764.0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="sanawm-2.6b")
    parser.add_argument("--latent", default="21x22x40", help="latent frames x height x width")
    parser.add_argument("--chunk-size", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3, help="timed iterations (after one warm-up)")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--device", default="")
    parser.add_argument("--json", help="also write the numbers here")
    parser.add_argument("--tiny", action="store_true", help="tiny preset, tiny clip, CPU")
    args = parser.parse_args(argv)
    if args.tiny:
        args.preset, args.latent, args.device, args.iters = "tiny", "7x2x3", "cpu", 1
    device = choose_device(args.device or None)
    frames, height, width = parse_latent_size(args.latent)
    autocast = device.type == "cuda"

    torch.manual_seed(0)
    real = random_model(args.preset, device, torch.bfloat16 if autocast else torch.float32).requires_grad_(False)
    generator = random_model(args.preset, device, torch.float32).train().requires_grad_(True)
    critic = random_model(args.preset, device, torch.float32).train().requires_grad_(True)
    if args.grad_checkpointing:
        enable_gradient_checkpointing([*generator.blocks, *critic.blocks])
    groups = param_groups(generator, 0.01) + param_groups(critic, 0.01)
    optimizer = torch.optim.AdamW(groups, lr=1e-5, betas=(0.0, 0.999), foreach=True)
    objective = DMDObjective(
        generator, critic, real, (1.0, 1.0), FlowMatchingSchedule.sigmas_from_timesteps(TIMESTEPS), args.chunk_size,
        exit_index=len(TIMESTEPS) - 1,
    )  # fmt: skip

    g = torch.Generator().manual_seed(0)
    cfg = generator.config
    raymap, plucker = camera_inputs(1, frames, height, width, device, torch.float32, g)
    null = generator.null_text()
    cond = Condition(
        first=torch.randn(1, cfg.in_channels, 1, height, width, generator=g).to(device),
        text=null.states.detach(), text_mask=null.mask, null_text=null.states.detach(), null_mask=null.mask,
        has_text=False, raymap=raymap, plucker=plucker[:, : cfg.plucker_channels].contiguous(),
    )  # fmt: skip

    def update(loss_of) -> float:
        _sync(device)
        tic = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = loss_of()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        return time.perf_counter() - tic

    shared, local = torch.Generator().manual_seed(1), torch.Generator(device=device).manual_seed(2)
    times = []
    reset_peak_memory(device)
    for i in range(args.iters + 1):
        gen_s = update(lambda: objective.generator_loss(cond, shared, local)[0])
        critic_s = update(lambda: objective.critic_loss(cond, shared, local))
        if i > 0:  # the first iteration allocates the optimizer state and warms up kernels
            times.append((gen_s, critic_s))
    gen_s = sorted(t[0] for t in times)[len(times) // 2]
    critic_s = sorted(t[1] for t in times)[len(times) // 2]
    peak = peak_memory_gb(device)
    result = {
        "preset": args.preset, "latent": [frames, height, width], "chunks": len(chunk_starts_for(frames, args.chunk_size)),
        "grad_checkpointing": args.grad_checkpointing, "generator_update_s": gen_s, "critic_update_s": critic_s,
        "iteration_s": gen_s + critic_s, "peak_memory_gb": peak, "device": str(torch.cuda.get_device_name(device))
        if device.type == "cuda" else "cpu",
    }  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    mem = f"{peak:.1f}" if peak is not None else "-"
    print(f"{'preset':<12} {'latent':>10} {'chunks':>6} {'generator s':>11} {'critic s':>9} {'iteration s':>11} {'peak GB':>8}")
    print(f"{args.preset:<12} {args.latent:>10} {result['chunks']:>6} {gen_s:>11.3f} {critic_s:>9.3f} "
          f"{gen_s + critic_s:>11.3f} {mem:>8}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
