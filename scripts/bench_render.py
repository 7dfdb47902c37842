"""Rendering throughput of the procedural worlds: frames per second by image size and batch.

    python scripts/bench_render.py                       # CUDA when available, else CPU
    python scripts/bench_render.py --sizes 128x128 --batches 64 256 --kinds street

Renders batches of random walk poses (uint8 output, the same work as `sanawm render`) and
prints one table row per (world kind, size, batch): milliseconds per batch and frames/s.
"""

from __future__ import annotations

import argparse
import time

import torch

from sanawm.camera import default_intrinsics
from sanawm.device import choose_device
from sanawm.worlds import KINDS, make_world, render
from sanawm.worlds.trajectories import random_action_walk


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=_size, default=[(128, 128), (256, 256)], help="HxW")
    parser.add_argument("--batches", nargs="+", type=int, default=None,
                        help="frames per render call (default: 16 64 256 on CUDA, 1 8 on CPU)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per row (default 10 CUDA, 2 CPU)")
    parser.add_argument("--supersample", type=int, default=1)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--compile", action="store_true",
                        help="experiment: torch.compile the per-chunk shading function (dynamic shapes)")
    args = parser.parse_args()
    if args.compile:
        import sanawm.worlds.render as render_module

        render_module._shade_chunk = torch.compile(render_module._shade_chunk, dynamic=True)
    device = choose_device(args.device)
    cuda = device.type == "cuda"
    batches = args.batches or ([16, 64, 256] if cuda else [1, 8])
    repeats = args.repeats or (10 if cuda else 2)
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}, torch {torch.__version__}, supersample {args.supersample}, compile {args.compile}")
    print(f"{'world':<9} {'primitives':>10} {'size':>9} {'batch':>6} {'ms/batch':>10} {'frames/s':>10}")
    for kind in args.kinds:
        world = make_world(args.world_seed, kind).to(device)
        _, path = random_action_walk(make_world(args.world_seed, kind), max(batches) + 1, seed=0)
        for size in args.sizes:
            k = default_intrinsics(size).to(device)
            for batch in batches:
                c2w = path[:batch].to(device)
                with torch.inference_mode():
                    render(world, c2w, k, size, supersample=args.supersample)  # warm-up
                    _sync(device)
                    start = time.perf_counter()
                    for _ in range(repeats):
                        render(world, c2w, k, size, supersample=args.supersample)
                    _sync(device)
                seconds = (time.perf_counter() - start) / repeats
                print(f"{kind:<9} {world.num_primitives:>10} {size[0]:>4}x{size[1]:<4} {batch:>6} "
                      f"{seconds * 1e3:>10.1f} {batch / seconds:>10.0f}", flush=True)


if __name__ == "__main__":
    main()
