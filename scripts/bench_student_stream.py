"""Time a few-step streaming student of a DiT preset (random weights) over a long video.

    python scripts/bench_student_stream.py                         # 2.6B, 961 frames at 704x1280, 4 steps, CUDA
    python scripts/bench_student_stream.py --decode ltx2            # + chunk decoding by an LTX-2 VAE (diffusers)
    python scripts/bench_student_stream.py --tiny                   # small preset, tiny clip, CPU (checks the script)

What `WorldModel.stream` runs per chunk for a distilled student (`ChunkSampler`, the few-step
rule at the student's 4 timesteps, no guidance: one DiT call per step), then the commit of the
chunk's clean latents to the stream cache (one more call), with the bounded window (1 chunk +
the first chunk as a sink, SANA-WM's `num_cached_blocks=2`). Stage 1 only, unless `--decode
ltx2`: then each chunk is also decoded by a randomly initialised `AutoencoderKLLTX2Video`
(diffusers' default config: the LTX-2 VAE's architecture) through `LTX2VAE.chunk_decoder`, as
the stream does, and the frames copied to the host as uint8. A short stream runs first
(untimed: kernels, allocator). Prints a table: frames, chunks, seconds, frames/s, peak GB.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from sanawm.benchmark import camera_inputs, peak_memory_gb, random_model, reset_peak_memory
from sanawm.chunks import chunk_spans, chunk_starts_for
from sanawm.device import choose_device
from sanawm.sampling.sampler import ChunkSampler, SamplerSettings, StreamWindow
from sanawm.vae import VideoVAE

TIMESTEPS = (1000.0, 967.0, 908.0, 764.0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _ltx2_vae(device: torch.device, dtype: torch.dtype):
    from diffusers import AutoencoderKLLTX2Video

    from sanawm.vae.ltx2 import LTX2VAE

    torch.manual_seed(0)
    return LTX2VAE(AutoencoderKLLTX2Video().to(device=device, dtype=dtype))


def stream(model, latent_frames: int, height: int, width: int, args, device, dtype, vae=None) -> dict:
    """One stream of `latent_frames` latent frames; returns seconds, chunks and per-chunk times."""
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    first = torch.randn(1, cfg.in_channels, 1, height, width, generator=g).to(device, dtype)
    settings = SamplerSettings(steps=len(args.timesteps), flow_shift=1.0, timesteps=tuple(args.timesteps), few_step=True)
    window = StreamWindow(chunks=args.window, sink=args.chunk_size + 1)
    sampler = ChunkSampler(model, first, model.null_text(), None, settings, window)
    raymap, plucker = camera_inputs(1, latent_frames, height, width, device, dtype, g)
    plucker = plucker[:, : cfg.plucker_channels]
    decoder = vae.chunk_decoder() if vae is not None else None
    spans = chunk_spans(chunk_starts_for(latent_frames, args.chunk_size), latent_frames)
    chunk_s = []
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for i, (a, b) in enumerate(spans):
            tic = time.perf_counter()
            camera = (raymap[:, a:b], plucker[:, :, a:b].contiguous())
            latents = sampler.sample(a, b, camera)
            if i < len(spans) - 1:
                sampler.commit(latents, camera)
            if decoder is not None:
                frames = VideoVAE.postprocess(decoder.decode(latents.to(vae.dtype)))[0].cpu()
                del frames
            if args.chunk_times:
                _sync(device)
                chunk_s.append(time.perf_counter() - tic)
    _sync(device)
    return {"seconds": time.perf_counter() - start, "chunks": len(spans), "chunk_s": chunk_s}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="sanawm-2.6b")
    p.add_argument("--frames", type=int, default=961, help="video frames (8k + 1)")
    p.add_argument("--latent-size", default="22x40", help="latent height x width (22x40: 704x1280)")
    p.add_argument("--chunk-size", type=int, default=3)
    p.add_argument("--window", type=int, default=1, help="chunks kept besides the first-chunk sink")
    p.add_argument("--timesteps", type=float, nargs="+", default=list(TIMESTEPS))
    p.add_argument("--decode", choices=("none", "ltx2"), default="none")
    p.add_argument("--chunk-times", action="store_true", help="also time every chunk (a sync per chunk)")
    p.add_argument("--device", default="")
    p.add_argument("--json", help="also write the numbers here")
    p.add_argument("--tiny", action="store_true", help="tiny preset, short clip, CPU")
    args = p.parse_args(argv)
    if args.tiny:
        # "small" has the LTX-2 latent width (128 channels), so --decode ltx2 works too
        args.preset, args.frames, args.latent_size, args.device = "small", 41, "2x3", "cpu"
    device = choose_device(args.device or None)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    height, width = (int(v) for v in args.latent_size.split("x"))
    latent_frames = (args.frames - 1) // 8 + 1

    torch.manual_seed(0)
    model = random_model(args.preset, device, dtype)
    vae = _ltx2_vae(device, dtype) if args.decode == "ltx2" else None
    stream(model, min(latent_frames, 2 * args.chunk_size + 1), height, width, args, device, dtype, vae)  # warm-up
    reset_peak_memory(device)
    run = stream(model, latent_frames, height, width, args, device, dtype, vae)
    peak = peak_memory_gb(device)
    result = {
        "preset": args.preset, "frames": args.frames, "latent": [latent_frames, height, width],
        "steps": len(args.timesteps), "timesteps": args.timesteps, "window": args.window,
        "sink": args.chunk_size + 1, "decode": args.decode, **run,
        "frames_per_s": args.frames / run["seconds"], "peak_memory_gb": peak,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    mem = f"{peak:.1f}" if peak is not None else "-"
    print(f"{'preset':<12} {'frames':>6} {'steps':>5} {'decode':>6} {'chunks':>6} {'seconds':>8} {'frames/s':>8} {'peak GB':>8}")
    print(f"{args.preset:<12} {args.frames:>6} {result['steps']:>5} {args.decode:>6} {run['chunks']:>6} "
          f"{run['seconds']:>8.2f} {result['frames_per_s']:>8.1f} {mem:>8}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
