"""Streaming chunk forward with and without CUDA graphs (`sanawm.model.graphs`), 2.6B preset.

    python scripts/bench_stream_graphs.py                          # 961 frames, chunks of 3, window 1
    python scripts/bench_stream_graphs.py --variants eager graphs compile compile+graphs
    python scripts/bench_stream_graphs.py --tiny --frames 97       # tiny preset on the CPU (smoke test)

Each variant streams the clip as `sanawm bench --mode streaming` does (`sanawm.benchmark`:
random weights, B=1, 704x1280 video, 300 text tokens, moving camera, bf16; every chunk timed as
one forward against the stream cache, median of `--iters` after warm-up calls, then committed)
with the bounded window (`--window` chunks + the first-chunk sink). Variants: eager (the
reference), graphs (`cuda_graphs`: each chunk's forward replayed from a CUDA graph),
compile (`compile_blocks`), compile+graphs. The compile variants raise dynamo's recompile
limit: a stream has three chunk shapes (first chunk, second, steady) times read / commit calls.

Before timing, `--check-chunks` chunks are run both ways on one cache to show that a replay
gives the eager forward's output (max |diff| and relative L2 per chunk).

Prints per-chunk forward times at chunks 1, 9, 25 and 40 (1-based, those that exist) for every
variant, the ratio of the last of them to chunk 1, and the graphs' speed-up; `--json` keeps all
chunks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

VARIANTS = ("eager", "graphs", "compile", "compile+graphs")
SHOWN_CHUNKS = (1, 9, 25, 40)


def check_replay(model, config, device, dtype, chunks: int) -> list[dict]:
    """Run the first `chunks` chunks eagerly and through ChunkGraphs on one cache: the difference."""
    from sanawm.benchmark import camera_inputs, make_inputs
    from sanawm.chunks import chunk_spans, chunk_starts_for
    from sanawm.model.graphs import ChunkGraphs

    T, h, w = config.latent_sizes()[0]
    sink = config.chunk_size + 1 if config.sink is None else config.sink
    cache = model.new_stream_cache(config.window, sink)
    graphs = ChunkGraphs(model, capture=None if device.type == "cuda" else False)  # CPU: the static-buffer path
    g = torch.Generator().manual_seed(7)
    text_len = min(config.text_len, model.config.max_text_len)
    text = make_inputs(model, (1, 1, 1), device, dtype, text_len, g)
    raymap, _ = camera_inputs(1, T, h, w, device, dtype)
    rows = []
    with torch.inference_mode():
        for i, (start, stop) in enumerate(chunk_spans(chunk_starts_for(T, config.chunk_size), T)[:chunks]):
            part = make_inputs(model, (stop - start, h, w), device, dtype, text_len, g)
            part.update(text=text["text"], text_mask=text["text_mask"], raymap=raymap[:, start:stop])
            eager = model(**part, cache=cache).float()
            for _ in range(3):  # eager (new shape), capture, replay
                got = graphs(cache, **part).float()
            diff = (got - eager).abs().max().item()
            rel = ((got - eager).norm() / eager.norm()).item()
            rows.append({"chunk": i + 1, "max_abs_diff": diff, "rel_l2": rel, "captures": graphs.captures,
                         "replays": graphs.replays, "capture_failed": graphs.failed})  # fmt: skip
            print(f"[check] chunk {i + 1}: graph vs eager max |diff| {diff:.2e}, rel L2 {rel:.2e} "
                  f"({graphs.captures} captures, {graphs.replays} replays so far"
                  + (f"; CAPTURE FAILED, eager: {graphs.failed})" if graphs.failed else ")"), flush=True)  # fmt: skip
            model.commit_to_cache(cache, **part)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=["eager", "graphs"])
    p.add_argument("--frames", type=int, default=961)
    p.add_argument("--chunk-size", type=int, default=3)
    p.add_argument("--window", type=int, default=1)
    p.add_argument("--sink", type=int, help="latent frames kept from the start (default: the first chunk)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--check-chunks", type=int, default=4, help="chunks run eagerly and replayed to compare (0: none)")
    p.add_argument("--tiny", action="store_true", help="tiny preset on the CPU, float32 (graphs run eagerly)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    from sanawm.benchmark import BenchConfig, random_model, run_benchmark
    from sanawm.model.compile import compile_blocks

    device = torch.device("cpu" if args.tiny else "cuda")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    config = BenchConfig(
        preset="tiny" if args.tiny else "sanawm-2.6b", frames=(args.frames,),
        size=(64, 96) if args.tiny else (704, 1280), mode="streaming", chunk_size=args.chunk_size,
        dtype=str(dtype).removeprefix("torch."), device=str(device), warmup=args.warmup, iters=args.iters,
        window=args.window, sink=args.sink,
    )  # fmt: skip
    torch.manual_seed(0)
    model = random_model(config.preset, device, dtype)
    checks = check_replay(model, config, device, dtype, args.check_chunks) if args.check_chunks else []
    results: dict[str, list[float]] = {}
    meta: dict[str, dict] = {}
    compiled = False
    for variant in sorted(args.variants, key=VARIANTS.index):  # eager ones first: compile is in place
        if variant.startswith("compile") and not compiled:
            torch._dynamo.config.recompile_limit = 32
            compile_blocks(model, backend="aot_eager" if args.tiny else "inductor")
            compiled = True
        t0 = time.perf_counter()
        row = run_benchmark(dataclasses.replace(config, cuda_graphs=variant.endswith("graphs")), model=model)[0]
        results[variant] = [c.seconds for c in row.chunks]
        meta[variant] = {"peak_gb": row.peak_memory_gb, "wall_s": time.perf_counter() - t0, "seconds": row.seconds,
                         "chunks": [dataclasses.asdict(c) for c in row.chunks]}  # fmt: skip
        print(f"[{variant}] {len(row.chunks)} chunks, one step of the clip {row.seconds:.3f} s, "
              f"peak {row.peak_memory_gb} GB, wall {meta[variant]['wall_s']:.0f} s", flush=True)  # fmt: skip
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if args.json:
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        payload = {"config": dataclasses.asdict(config), "gpu": gpu, "torch": torch.__version__, "check": checks,
                   "variants": meta}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote {args.json}")
    n = len(next(iter(results.values())))
    shown = [c for c in SHOWN_CHUNKS if c <= n]
    print(f"\nper-chunk forward seconds ({config.preset}, {args.frames} frames, chunks of {args.chunk_size}, "
          f"window {args.window} + sink; B=1, median of {args.iters})")  # fmt: skip
    print(f"{'variant':>15} " + " ".join(f"{'chunk ' + str(c):>9}" for c in shown) + f" {'last/1st':>9}"
          + f" {'step s':>8}")  # fmt: skip
    for variant, secs in results.items():
        cells = " ".join(f"{secs[c - 1]:>9.4f}" for c in shown)
        print(f"{variant:>15} {cells} {secs[shown[-1] - 1] / secs[0]:>9.2f} {sum(secs):>8.3f}")
    for base, fast in (("eager", "graphs"), ("compile", "compile+graphs")):
        if base in results and fast in results:
            speed = [results[base][c - 1] / results[fast][c - 1] for c in shown]
            print(f"{fast + ' speed-up':>15} " + " ".join(f"{s:>8.2f}x" for s in speed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
