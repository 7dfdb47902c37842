"""Speed and memory of the stage-2 refiner (LTX-2 DiT, sliding window), random weights.

    python scripts/bench_refiner.py --config official --latent 22x40 --frames 121 \
        --modes resident offload --json out.json          # one H200: 704x1280, 961 frames

The stage-1 latents arrive as the streaming sampler makes them (frame 0 plus 3, then 3 at a
time) and are pushed into a `StreamingRefiner`; each push refines one block of 3 latent frames
(3 Euler steps + the sigma-0 history pass = 4 DiT forwards). "resident": the whole DiT on the
GPU; "offload": weights on the CPU, streamed to the GPU block by block (diffusers group
offloading with a side stream). The weights are built on the GPU directly, in bf16, with the
default random init; the text is 1024 random connector tokens (128 of them real). A mode stops
after --time-limit seconds; the clip time is then sink + first block + the median block time
for each remaining block (said in the table). Peak memory is torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from sanawm.refiner import StreamingRefiner
from sanawm.refiner.loading import enable_block_offload

CONFIGS = {
    # The released LTX-2 DiT: 48 layers, 32 heads x 128 (video), 32 x 64 (audio), caption 3840.
    "official": dict(num_layers=48, num_attention_heads=32, attention_head_dim=128, in_channels=128, out_channels=128,
                     cross_attention_dim=4096, caption_channels=3840, audio_num_attention_heads=32,
                     audio_attention_head_dim=64, audio_cross_attention_dim=2048),  # fmt: skip
    "tiny": dict(num_layers=2, num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
                 cross_attention_dim=16, caption_channels=16, audio_in_channels=4, audio_out_channels=4,
                 audio_num_attention_heads=2, audio_attention_head_dim=4, audio_cross_attention_dim=8),  # fmt: skip
}


def build_model(name: str, device: torch.device, dtype: torch.dtype):
    from diffusers import LTX2VideoTransformer3DModel

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build straight in the target dtype, on the device
    try:
        with torch.device(device):
            model = LTX2VideoTransformer3DModel(**CONFIGS[name])
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pieces(frames: int) -> list[tuple[int, int]]:
    """Stage-1 streaming chunks: frame 0 plus 3, then 3 at a time (a remainder joins the last)."""
    starts = [0] + list(range(4, frames - 2, 3)) if frames > 4 else [0]
    return list(zip(starts, starts[1:] + [frames]))


def run_mode(model, mode: str, args, device: torch.device, dtype: torch.dtype) -> dict:
    config = model.config
    h, w = args.latent
    g = torch.Generator(device).manual_seed(0)
    latents = torch.randn(1, config.in_channels, args.frames, h, w, generator=g, device=device, dtype=dtype)
    embeds = torch.randn(1, args.text_tokens, config.caption_channels, generator=g, device=device, dtype=dtype)
    mask = torch.zeros(1, args.text_tokens, dtype=torch.long, device=device)
    mask[:, -args.real_text_tokens :] = 1
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    refiner = StreamingRefiner(model, embeds, mask, fps=16.0, generator=torch.Generator(device).manual_seed(1))
    limit = args.time_limit if mode == "resident" else args.offload_time_limit
    times, refined, began = [], 0, time.perf_counter()
    for start, stop in pieces(args.frames):
        sync(device)
        t0 = time.perf_counter()
        refiner.push(latents[:, :, start:stop])
        if stop == args.frames:
            refiner.finish()  # a short remainder, if any
        sync(device)
        times.append(time.perf_counter() - t0)
        refined = stop
        print(f"{mode}: frames [{start}, {stop}) {times[-1]:.3f} s", flush=True)
        if time.perf_counter() - began > limit:
            break
    blocks = len(times)  # the first push = sink pass + one block
    total_blocks = len(pieces(args.frames))
    steady = statistics.median(times[1:]) if blocks > 1 else times[0]
    clip = times[0] + steady * (total_blocks - 1) if blocks < total_blocks else sum(times)
    return dict(
        mode=mode,
        blocks_timed=blocks,
        blocks_in_clip=total_blocks,
        first_push_s=times[0],
        block_s_median=steady,
        block_s_all=times,
        clip_s=clip,
        clip_measured=blocks == total_blocks,
        peak_gb=torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None,
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="official")
    p.add_argument("--latent", default="22x40", help="latent HxW (22x40 = 704x1280 video)")
    p.add_argument("--frames", type=int, default=121, help="latent frames (121 = 961 video frames)")
    p.add_argument("--modes", nargs="+", choices=("resident", "offload"), default=["resident", "offload"])
    p.add_argument("--text-tokens", type=int, default=1024)
    p.add_argument("--real-text-tokens", type=int, default=128)
    p.add_argument("--time-limit", type=float, default=120.0, help="seconds per resident run before extrapolating")
    p.add_argument("--offload-time-limit", type=float, default=30.0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    args.latent = tuple(int(v) for v in args.latent.lower().split("x"))
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    t0 = time.perf_counter()
    model = build_model(args.config, device, dtype)
    sync(device)
    params = sum(p.numel() for p in model.parameters())
    meta = dict(config=args.config, params_b=params / 1e9, build_s=time.perf_counter() - t0, latent=args.latent,
                frames=args.frames, dtype=args.dtype, torch=torch.__version__,
                device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")  # fmt: skip
    print(json.dumps(meta), flush=True)
    rows = []
    with torch.no_grad():
        for mode in args.modes:
            if mode == "offload":
                t0 = time.perf_counter()
                model.to("cpu")
                enable_block_offload(model, device)
                meta["offload_setup_s"] = time.perf_counter() - t0
            rows.append(run_mode(model, mode, args, device, dtype))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=2)
    tokens = args.latent[0] * args.latent[1]
    print(f"\nrefiner {args.config} ({meta['params_b']:.2f} B params, {args.dtype}), latents {args.frames}x"
          f"{args.latent[0]}x{args.latent[1]} ({tokens} tokens/frame), {meta['device']}")  # fmt: skip
    print("| mode | s / block (3 latent frames) | sink + 1st block s | clip s (blocks) | peak GB |")
    print("|---|---|---|---|---|")
    for r in rows:
        clip = f"{r['clip_s']:.1f} ({r['blocks_in_clip']}, " + (
            "measured)" if r["clip_measured"] else f"from {r['blocks_timed']} timed)"
        )
        peak = "-" if r["peak_gb"] is None else f"{r['peak_gb']:.1f}"
        print(f"| {r['mode']} | {r['block_s_median']:.3f} | {r['first_push_s']:.3f} | {clip} | {peak} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
