"""One clip on 1 vs N GPUs (sequence parallelism), and a queue of clips (data parallelism).

    torchrun --nproc_per_node 2 scripts/bench_sequence_parallel.py                  # 2.6B, 961 frames, 720p
    torchrun --nproc_per_node 2 scripts/bench_sequence_parallel.py --mode throughput --frames 321 --steps 4
    torchrun --nproc_per_node 2 scripts/bench_sequence_parallel.py --preset tiny --device cpu \\
        --latents 5x4x6 --dtype float32 --mode both                                  # CPU smoke test (gloo)

Random weights (the from-scratch init) and random inputs with a real camera path
(`sanawm.benchmark`). Every process runs this script; rank 0 prints the tables and writes
`--json`.

latency: rank 0 first times the forward alone (the 1-GPU baseline; the other ranks wait),
then all N ranks time the same forward spread over them (`sanawm.parallel.sequence`). Rows:
seconds per forward (median of --iters after --warmup, CUDA events), the N-GPU / 1-GPU ratio,
peak memory of every rank (`torch.cuda.max_memory_allocated`, weights included), and the
largest difference between the two outputs relative to the output's largest magnitude. With
--fp32-reference rank 0 also runs the forward in float32, so that difference can be read
against the size of bf16 rounding itself (the 1-GPU bf16 output vs float32).

throughput: a queue of --requests clips, each one `sample_bidirectional` run of --steps
denoising steps (no guidance: one forward per step), two ways: data-parallel (rank r takes
requests r, r+N, ...; every GPU holds the whole model and runs its own clips) and
sequence-parallel (the clips one after another, every forward spread over all ranks).
clips/hour = requests / wall seconds * 3600, wall time from a barrier before to one after.

--compile (regional torch.compile of the blocks, `sanawm.model.compile`) and --fp8 (FP8 block
matmuls, `sanawm.ops.fp8`) apply to both the 1-GPU and the N-GPU runs; they need those modules
(the performance work). --compile-backend aot_eager traces without generating code (CPU check).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.distributed as dist

from sanawm.benchmark import (
    latents_for_frames,
    make_inputs,
    parse_latent_size,
    peak_memory_gb,
    random_model,
    reset_peak_memory,
    time_call,
)
from sanawm.parallel import SequenceParallel, local_device
from sanawm.sampling import Conditioning, SamplerSettings, sample_bidirectional
from sanawm.text import TextEmbedding


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("latency", "throughput", "both"), default="latency")
    p.add_argument("--preset", default="sanawm-2.6b")
    sizes = p.add_mutually_exclusive_group()
    sizes.add_argument("--frames", type=int, nargs="+", help="video frames, 8k+1 (default 961)")
    sizes.add_argument("--latents", type=parse_latent_size, nargs="+", metavar="TxHxW")
    p.add_argument("--size", type=int, nargs=2, default=(704, 1280), metavar=("H", "W"), help="video size")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), help="default bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--device", choices=("cuda", "cpu"), help="default cuda when available")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--text-len", type=int, default=300)
    p.add_argument("--fp32-reference", action="store_true", help="latency: also a float32 1-GPU forward")
    p.add_argument("--requests", type=int, default=4, help="throughput: clips in the queue")
    p.add_argument("--steps", type=int, default=4, help="throughput: denoising steps per clip")
    p.add_argument("--compile", action="store_true", help="torch.compile every block (sanawm.model.compile)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default inductor)")
    p.add_argument("--fp8", action="store_true", help="FP8 block matmuls (sanawm.ops.fp8)")
    p.add_argument("--json", help="rank 0 writes the results here")
    return p.parse_args()


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|, in float32."""
    a, b = a.float(), b.float()
    return float((a - b).abs().max() / b.abs().max())


def gather_floats(sp: SequenceParallel, value: float | None) -> list[float | None]:
    values = [None] * sp.world_size
    dist.all_gather_object(values, value, group=sp.group)
    return values


def latency(model, sp: SequenceParallel, sizes, args, device, dtype) -> list[dict]:
    rows = []
    for size in sizes:
        inputs = make_inputs(model, size, device, dtype, min(args.text_len, model.config.max_text_len),
                             torch.Generator().manual_seed(0))  # fmt: skip
        row = {"latents": "x".join(map(str, size)), "tokens": size[0] * size[1] * size[2], "gpus": sp.world_size}
        with torch.inference_mode():
            model.sequence_parallel = None
            if sp.is_main:  # the 1-GPU baseline, alone
                reset_peak_memory(device)
                row["seconds_1"] = time_call(lambda: model(**inputs), device, args.warmup, args.iters)
                row["peak_gb_1"] = peak_memory_gb(device)
                single = model(**inputs)
                if args.fp32_reference:
                    reference = model.float()(**{k: v.float() if v.is_floating_point() else v
                                                 for k, v in inputs.items()})  # fmt: skip
                    model.to(dtype)
                    row["bf16_vs_fp32_1"] = relative_difference(single, reference)
                    del reference
            sp.barrier()
            model.sequence_parallel = sp
            reset_peak_memory(device)
            seconds = time_call(lambda: model(**inputs), device, args.warmup, args.iters)
            peaks = gather_floats(sp, peak_memory_gb(device))
            spread = model(**inputs)
        if sp.is_main:
            row.update(seconds_n=seconds, ratio=seconds / row["seconds_1"], peak_gb_n=peaks,
                       difference=relative_difference(spread, single))  # fmt: skip
            rows.append(row)
            del single
        del inputs, spread
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _queue(model, size, args, device, dtype) -> list[tuple[Conditioning, SamplerSettings]]:
    """The requests: random first latents, text and cameras (seeded per request)."""
    queue = []
    for i in range(args.requests):
        inputs = make_inputs(model, size, device, torch.float32, min(args.text_len, model.config.max_text_len),
                             torch.Generator().manual_seed(i))  # fmt: skip
        text = TextEmbedding(inputs["text"], inputs["text_mask"])
        cond = Conditioning(inputs["latents"][:, :, :1], text, inputs["raymap"], inputs["chunk_plucker"])
        queue.append((cond, SamplerSettings(steps=args.steps, flow_shift=3.0, seed=i)))
    return queue


def _run_queue(model, sp: SequenceParallel, jobs, device) -> tuple[float, list[float | None]]:
    reset_peak_memory(device)
    sp.barrier()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for cond, settings in jobs:
            sample_bidirectional(model, cond, settings)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    sp.barrier()
    return time.perf_counter() - start, gather_floats(sp, peak_memory_gb(device))


def throughput(model, sp: SequenceParallel, sizes, args, device, dtype) -> list[dict]:
    rows = []
    for size in sizes:
        queue = _queue(model, size, args, device, dtype)
        model.sequence_parallel = None
        _run_queue(model, sp, queue[sp.rank : sp.rank + 1], device)  # warm-up: one clip per rank
        wall_dp, peaks_dp = _run_queue(model, sp, queue[sp.rank :: sp.world_size], device)
        model.sequence_parallel = sp
        wall_sp, peaks_sp = _run_queue(model, sp, queue, device)
        for name, wall, peaks in (("data-parallel", wall_dp, peaks_dp), ("sequence-parallel", wall_sp, peaks_sp)):
            rows.append({"latents": "x".join(map(str, size)), "way": name, "gpus": sp.world_size,
                         "requests": args.requests, "steps": args.steps, "wall_s": wall,
                         "clips_per_hour": args.requests / wall * 3600, "peak_gb": peaks})  # fmt: skip
    return rows


def _gb(values) -> str:
    return "/".join("n/a" if v is None else f"{v:.1f}" for v in values)


def main() -> None:
    args = parse_args()
    if args.fp8 and args.fp32_reference:
        raise SystemExit("--fp32-reference casts the model, which FP8 weights do not survive; drop one of them")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        device = local_device()
        torch.cuda.set_device(device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    sp = SequenceParallel.init(device)
    sizes = args.latents or [latents_for_frames(f, *args.size) for f in (args.frames or [961])]
    torch.manual_seed(0)  # the same random weights on every rank
    model = random_model(args.preset, device, dtype)
    sp.check(model.config, latent_height=min(s[1] for s in sizes))
    if args.fp8:
        from sanawm.ops.fp8 import convert_to_fp8  # after any dtype change: .to() would cast the FP8 weights

        convert_to_fp8(model)
    if args.compile:
        from sanawm.model.compile import compile_blocks

        compile_blocks(model, backend=args.compile_backend)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out = {"meta": {"preset": args.preset, "dtype": str(dtype), "device": name, "torch": torch.__version__,
                    "processes": sp.world_size, "random_weights": True,
                    "compile": args.compile and args.compile_backend, "fp8": args.fp8}}  # fmt: skip
    if args.mode in ("latency", "both"):
        out["latency"] = latency(model, sp, sizes, args, device, dtype)
    if args.mode in ("throughput", "both"):
        out["throughput"] = throughput(model, sp, sizes, args, device, dtype)
    if sp.is_main:
        n = sp.world_size
        if "latency" in out:
            print(f"\nlatency, {args.preset} {args.dtype or dtype}, 1 vs {n} processes ({out['meta']['device']})")
            print(f"{'latents':>10} {'tokens':>8} {'s 1':>8} {f's {n}':>8} {'ratio':>6} {'GB 1':>6} "
                  f"{f'GB {n} (per rank)':>18} {'rel diff':>9} {'bf16 vs fp32':>12}")  # fmt: skip
            for r in out["latency"]:
                ref = r.get("bf16_vs_fp32_1")
                print(f"{r['latents']:>10} {r['tokens']:>8} {r['seconds_1']:>8.3f} {r['seconds_n']:>8.3f} "
                      f"{r['ratio']:>6.2f} {_gb([r['peak_gb_1']]):>6} {_gb(r['peak_gb_n']):>18} "
                      f"{r['difference']:>9.2e} {'n/a' if ref is None else format(ref, '.2e'):>12}")  # fmt: skip
        if "throughput" in out:
            print(f"\nthroughput, {args.requests} requests x {args.steps} steps on {n} processes")
            print(f"{'latents':>10} {'way':>18} {'wall s':>8} {'s/clip':>8} {'clips/hour':>10} {'GB (per rank)':>18}")
            for r in out["throughput"]:
                print(f"{r['latents']:>10} {r['way']:>18} {r['wall_s']:>8.2f} {r['wall_s'] / r['requests']:>8.2f} "
                      f"{r['clips_per_hour']:>10.1f} {_gb(r['peak_gb']):>18}")  # fmt: skip
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=1)
            print(f"wrote {args.json}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
