"""`sanawm bench`: forward latency, tokens/s and peak GPU memory of a DiT preset.

    sanawm bench                                             # 2.6B, bf16, 81/321/961 frames, CUDA
    sanawm bench --mode streaming --chunk-size 3 --json stream.json
    sanawm bench --preset tiny --device cpu --latents 5x4x6 9x4x6 --csv tiny.csv
    sanawm bench --mode streaming --frames 961 --window 1 --cuda-graphs   # graph-replayed chunks
    sanawm bench --compile --fp8 --frames 961                 # the Hopper fast paths
    torchrun --nproc_per_node 2 -m sanawm bench --sequence-parallel --frames 961

Random weights; see `sanawm.benchmark` for what is timed.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from sanawm.benchmark import (
    DTYPES,
    MODES,
    BenchConfig,
    format_row,
    parse_latent_size,
    random_model,
    resolve_device,
    run_benchmark,
    table_header,
    write_csv,
    write_json,
)
from sanawm.cli.traj import image_size_arg
from sanawm.errors import UserInputError
from sanawm.model import PRESETS
from sanawm.model.compile import COMPILE_CHOICES, apply_fast_paths, attention_unsupported, fp8_unsupported
from sanawm.ops.flash import ATTENTION_KERNELS


def _latent_arg(text: str) -> tuple[int, int, int]:
    try:
        return parse_latent_size(text)
    except UserInputError as err:  # argparse reports ArgumentTypeError messages as they are
        raise argparse.ArgumentTypeError(str(err)) from err


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` sub-command."""
    p = subparsers.add_parser(
        "bench",
        help="time the DiT and measure its memory across video lengths",
        description="Median seconds per forward, tokens/s and peak GPU memory of a DiT preset with "
        "random weights, for several video lengths; --mode streaming times each chunk against the "
        "stream cache and reports the cache size.",
    )
    p.add_argument(
        "--preset", default="sanawm-2.6b", choices=sorted(PRESETS), help="model preset (default sanawm-2.6b)"
    )
    lengths = p.add_mutually_exclusive_group()
    lengths.add_argument("--frames", type=int, nargs="+", help="video frame counts, 8k+1 each (default 81 321 961)")
    lengths.add_argument(
        "--latents", type=_latent_arg, nargs="+", metavar="TxHxW", help="latent sizes instead of --frames"
    )
    p.add_argument("--size", type=image_size_arg, default=(704, 1280), help="video HxW for --frames (default 704x1280)")
    p.add_argument("--mode", choices=MODES, default="forward", help="forward (whole clip) or streaming (chunks)")
    p.add_argument("--chunk-size", type=int, default=3, help="latent frames per streaming chunk (default 3)")
    p.add_argument("--window", type=int, metavar="N",
                   help="streaming: keep only N recent chunks of softmax keys / values besides the sink "
                        "(default: keep all)")  # fmt: skip
    p.add_argument("--sink", type=int, metavar="FRAMES",
                   help="streaming with --window: latent frames from the start always kept (default: the first chunk)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="streaming with --window: replay each chunk's forward from a CUDA graph (CUDA only)")
    p.add_argument("--compile", nargs="?", const="default", choices=COMPILE_CHOICES,
                   help="regional torch.compile of the blocks (inductor); '--compile tuned' also tunes each "
                        "fused kernel's launch shapes (minutes more compile, a few %% faster)")  # fmt: skip
    p.add_argument("--attention", choices=ATTENTION_KERNELS, default="sdpa",
                   help="softmax attention kernel: sdpa (PyTorch), flash4 (FlashAttention-4, Hopper), fp8 "
                        "(FP8 Triton kernel, sm89+) or flash3-fp8 (FP8 on FlashAttention-3, Hopper); the FP8 "
                        "kernels change results, see benchmarks/README.md")  # fmt: skip
    p.add_argument("--fp8", action="store_true",
                   help="FP8 block matmuls (CUDA GPU of compute capability 8.9+, bfloat16)")
    p.add_argument("--dtype", choices=DTYPES, help="default bfloat16 on CUDA, float32 on the CPU")
    p.add_argument("--device", help="default cuda when available, else cpu")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first (default 1)")
    p.add_argument("--iters", type=int, default=3, help="timed calls, median reported (default 3)")
    p.add_argument("--text-len", type=int, default=300, help="text tokens (default 300, capped by the preset)")
    p.add_argument("--json", metavar="OUT.json", help="also write the rows (and per-chunk details) as JSON")
    p.add_argument("--csv", metavar="OUT.csv", help="also write the rows as CSV")
    p.add_argument("--sequence-parallel", action="store_true",
                   help="spread every forward over the processes started by torchrun (one GPU each); rank 0 "
                        "prints, its peak memory is reported (it holds the largest share)")  # fmt: skip
    p.set_defaults(func=run)


def _window_text(config: BenchConfig) -> str:
    if config.window is None:
        return ", every chunk kept"
    sink = config.sink if config.sink is not None else config.chunk_size + 1
    return f", window {config.window} chunks + sink {sink} latent frames"


def run(args: argparse.Namespace) -> int:
    """Measure, print the table as rows finish, write the requested files."""
    if not args.sequence_parallel:
        return _run(args, None)
    from sanawm.parallel.sequence import SequenceParallel, local_device

    device = torch.device(args.device) if args.device else local_device()
    if device.type == "cuda" and device.index is None:
        device = local_device()
    args.device = str(device)
    try:
        return _run(args, SequenceParallel.init(device))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _run(args: argparse.Namespace, sp) -> int:
    from sanawm.device import choose_device

    device = str(choose_device(args.device))
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    config = BenchConfig(
        preset=args.preset,
        frames=tuple(args.frames or BenchConfig.frames),
        size=args.size,
        latents=tuple(args.latents or ()),
        mode=args.mode,
        chunk_size=args.chunk_size,
        dtype=dtype,
        device=device,
        warmup=args.warmup,
        iters=args.iters,
        text_len=args.text_len,
        window=args.window,
        sink=args.sink,
        cuda_graphs=args.cuda_graphs,
        compile=args.compile is not None,
        tune=args.compile == "tuned",
        fp8=args.fp8,
        attention=args.attention,
    )
    resolve_device(config)  # a missing GPU or a too-large CPU preset fails before the header
    if config.fp8:
        reason = fp8_unsupported(resolve_device(config), getattr(torch, config.dtype))
        if reason is not None:
            raise UserInputError(reason)
    reason = attention_unsupported(config.attention, resolve_device(config))
    if reason is not None:
        raise UserInputError(reason)
    for path in (args.json, args.csv):  # fail before minutes of measuring, not after
        if path is not None and (Path(path).is_dir() or not Path(path).parent.is_dir()):
            raise UserInputError(f"cannot write {path!r}: its folder does not exist or it is a folder")
    params = PRESETS[config.preset]
    model = None
    if sp is not None:
        sp.check(params, latent_height=min(h for _, h, _ in config.latent_sizes()))
        torch.manual_seed(config.seed)  # the same random weights on every rank
        model = random_model(config.preset, resolve_device(config), getattr(torch, config.dtype))
        apply_fast_paths(model, compile=config.compile, fp8=config.fp8, attention=config.attention, tune=config.tune)
        model.sequence_parallel = sp
        if not sp.is_main:  # the other ranks compute their share and print nothing
            run_benchmark(config, model=model)
            return 0
    print(
        f"sanawm bench: {config.preset} with RANDOM weights ({params.depth} blocks, width {params.hidden_size}), "
        f"{config.dtype}, {device}, mode {config.mode}"
        + (f" (chunks of {config.chunk_size} latent frames" if config.mode == "streaming" else "")
        + (_window_text(config) + ")" if config.mode == "streaming" else "")
        + "".join(f", {name}" for name in ("compile", "fp8", "cuda_graphs") if getattr(config, name))
        + (" (tuned)" if config.compile and config.tune else "")
        + (f", attention {config.attention}" if config.attention != "sdpa" else "")
        + f", median of {config.iters} after {config.warmup} warm-up"
        + f", {min(config.text_len, params.max_text_len)} text tokens"
        + (f", sequence-parallel over {sp.world_size} processes" if sp is not None else ""),
        flush=True,
    )
    print(table_header(config.mode), flush=True)
    rows = run_benchmark(config, model=model, on_row=lambda row: print(format_row(row), flush=True))
    meta = {"random_weights": True, "torch": torch.__version__, **dataclasses.asdict(config),
            "sequence_parallel_processes": sp.world_size if sp is not None else 1}  # fmt: skip
    if args.json:
        write_json(rows, args.json, meta)
        print(f"wrote {args.json}")
    if args.csv:
        write_csv(rows, args.csv)
        print(f"wrote {args.csv}")
    return 0
