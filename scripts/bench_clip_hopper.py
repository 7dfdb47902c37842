"""End-to-end stage-1 clip on one GPU: sanawm (eager, compiled, compiled + FP8) vs diffusers'
`SanaWMPipeline` 0.42.1 given the same components.

    python scripts/bench_clip_hopper.py                          # 961 frames, 3 measured steps, CUDA
    python scripts/bench_clip_hopper.py --frames 81 --steps 2    # a quick check
    python scripts/bench_clip_hopper.py --tiny                   # tiny models on the CPU (smoke test)

The clip (issue 12's end-to-end target): 704x1280 video (22x40 latents), `--frames` 961
(121 latent frames), flow-matching Euler, text CFG 5 with the conditional and the negative text
batched in one forward (B=2), latent frame 0 the clean encoded image, a moving camera
(raymap + chunk-Plücker rays), LTX-2 VAE encode of the image and decode of the clip included.
Weights are random: the 2.6B preset (sanawm's from-scratch init; diffusers'
`SanaWMTransformer3DModel()` default config, the same architecture) and a diffusers
`AutoencoderKLLTX2Video()` (its default config is the LTX-2 VAE's architecture), bf16. The VAE
is set up as `sanawm.vae.ltx2.LTX2VAE` runs it (frame-wise temporal tiles) and that same
autoencoder setup is what the diffusers pipeline gets; text goes in as embeddings
(`prompt_embeds` / `negative_prompt_embeds`, 300 tokens, no text encoder).

A 60-step clip takes minutes per implementation (diffusers ~13 s per B=2 step at 961 frames),
so each implementation runs `--steps` full-size steps and the numbers are extrapolated to
`--clip-steps` (60): s_per_clip_extrapolated = prepare + clip_steps * s_per_step + decode,
where prepare is everything before the first step (image encode, camera packing, noise) and
decode includes post-processing to [0, 1] pixels on the GPU. The measured k-step time is
kept too (s_measured). Before the timed clip each process runs one untimed 1-step clip with a
short decode (`first_call_s`: holds torch.compile's compile time).

Each implementation runs in its own process (`--worker NAME`), one after the other on the
same GPU, with a timeout each (`--timeout`) and a budget for all (`--budget`); records are
written after each, so a failing or hanging one loses only itself. Records go to `--json`
(default benchmarks/hopper.json), merged by (impl, precision, mode, frames): existing records
of other keys are kept. A table is printed last.

Implementations: sanawm-eager (the reference path), sanawm-compile
(`sanawm.model.compile.compile_blocks`), sanawm-fp8 (`sanawm.ops.fp8.convert_to_fp8` + compile;
needs sm89+), sanawm-flash4 (compile + the softmax attention on FlashAttention-4,
`sanawm.ops.flash`; needs flash-attn-4 and sm90, or on --tiny the op's CPU implementation),
diffusers (`SanaWMPipeline`, needs diffusers 0.42.1 importable).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

IMPLS = ("sanawm-eager", "diffusers", "sanawm-compile", "sanawm-fp8", "sanawm-flash4")
PRECISION = {"sanawm-eager": "bf16", "diffusers": "bf16", "sanawm-compile": "bf16", "sanawm-fp8": "fp8",
             "sanawm-flash4": "bf16"}  # fmt: skip
HEIGHT, WIDTH = 704, 1280
TINY_HEIGHT, TINY_WIDTH = 64, 96
TEXT_CHANNELS = 2304  # Gemma-2 hidden size, the release's caption_channels
FLOW_SHIFT = 8.0
#: The tiny VAE / DiT of --tiny (the DiT matches the "tiny" preset and diffusers' tiny config).
TINY_DIT = dict(num_layers=4, hidden_size=224, num_attention_heads=2, caption_channels=64, in_channels=16)
TINY_VAE = dict(latent_channels=16, block_out_channels=(8, 16, 32, 64), decoder_block_out_channels=(8, 16, 32),
                layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1))  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


# ----------------------------------------------------------------------------------------
# Shared inputs: the same image, camera and text embeddings for every implementation
# ----------------------------------------------------------------------------------------


def clip_inputs(args) -> dict:
    """Image (H, W, 3) uint8, camera (F, 4, 4) c2w + [fx, fy, cx, cy], text embeddings."""
    from sanawm.camera import action_to_c2w

    h, w = (TINY_HEIGHT, TINY_WIDTH) if args.tiny else (HEIGHT, WIDTH)
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8)
    # walk forward while turning left, then look up: a moving camera with rotation and translation
    c2w = action_to_c2w(f"w-{args.frames // 2},jw-{args.frames // 4},iw-{args.frames}").double()[: args.frames]
    assert c2w.shape[0] == args.frames, c2w.shape
    intrinsics = [0.6 * w, 0.6 * w, w / 2, h / 2]
    channels = TINY_DIT["caption_channels"] if args.tiny else TEXT_CHANNELS
    length = 12 if args.tiny else args.text_len
    text = torch.randn(1, length, channels, generator=g)
    negative = torch.randn(1, length, channels, generator=g)
    mask = torch.ones(1, length, dtype=torch.int64)
    neg_mask = mask.clone()
    neg_mask[:, length // 4 :] = 0  # an empty negative prompt is mostly padding
    return dict(image=image, c2w=c2w, intrinsics=intrinsics, size=(h, w), text=text, text_mask=mask,
                negative=negative, negative_mask=neg_mask)  # fmt: skip


def make_vae(args, device: torch.device, dtype: torch.dtype):
    """A random LTX-2 VAE (`AutoencoderKLLTX2Video`, default config = the LTX-2 architecture),
    set up as sanawm runs it (`LTX2VAE`: tiling, frame-wise, strides fixed)."""
    from diffusers import AutoencoderKLLTX2Video

    from sanawm.vae.ltx2 import LTX2VAE

    torch.manual_seed(1)
    with torch.device(device):
        autoencoder = AutoencoderKLLTX2Video(**(TINY_VAE if args.tiny else {}))
    with torch.no_grad():  # non-trivial latent statistics, as a trained VAE has
        autoencoder.latents_mean.normal_(0, 0.1)
        autoencoder.latents_std.uniform_(0.5, 1.5)
    return LTX2VAE(autoencoder.to(dtype))


# ----------------------------------------------------------------------------------------
# Workers
# ----------------------------------------------------------------------------------------


def sanawm_worker(impl: str, args, device: torch.device, dtype: torch.dtype) -> dict:
    from sanawm.benchmark import random_model
    from sanawm.camera import pack_camera
    from sanawm.model.compile import compile_blocks
    from sanawm.ops.flash import use_attention_kernel
    from sanawm.ops.fp8 import convert_to_fp8
    from sanawm.sampling.sampler import Conditioning, SamplerSettings, sample_bidirectional
    from sanawm.text import TextEmbedding
    from sanawm.vae import VideoVAE

    torch.manual_seed(0)
    model = random_model("tiny" if args.tiny else "sanawm-2.6b", device, dtype)
    if impl == "sanawm-fp8":
        convert_to_fp8(model)
    if impl == "sanawm-flash4":
        use_attention_kernel(model, "flash4")
    if impl in ("sanawm-compile", "sanawm-fp8", "sanawm-flash4"):
        compile_blocks(model, backend="aot_eager" if args.tiny else "inductor")
    vae = make_vae(args, device, dtype)
    inp = clip_inputs(args)
    text = TextEmbedding(inp["text"], inp["text_mask"]).to(device, torch.float32)
    negative = TextEmbedding(inp["negative"], inp["negative_mask"]).to(device, torch.float32)

    def clip(steps: int, decode_latents: int | None) -> dict:
        """One clip, phase by phase (synced): prepare, `steps` sampling steps, decode."""
        times: dict = {}
        reset_peak(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            pixels = VideoVAE.preprocess(inp["image"][None, None]).to(device, vae.dtype)
            first_latent = vae.encode(pixels).float()
            raymap, plucker = pack_camera(inp["c2w"], torch.tensor(inp["intrinsics"]), inp["size"], vae.strides)
            cond = Conditioning(first_latent, text, raymap[None].to(device), plucker[None].to(device), negative)
            sync(device)
            t1 = time.perf_counter()
            step_ends: list[float] = []

            def on_step(done: int, total: int | None) -> None:
                sync(device)
                step_ends.append(time.perf_counter())

            settings = SamplerSettings(steps=steps, flow_shift=FLOW_SHIFT, cfg=args.cfg, seed=0)
            latents = sample_bidirectional(model, cond, settings, on_step)
            sync(device)
            t2 = time.perf_counter()
            times["peak_sampling_gb"] = peak_gb(device)
            reset_peak(device)
            if decode_latents is not None:
                latents = latents[:, :, :decode_latents]
            frames = VideoVAE.postprocess(vae.decode(latents.to(vae.dtype)))  # uint8 on the device
            sync(device)
            t3 = time.perf_counter()
        assert frames.shape[1] == vae.temporal_stride * (latents.shape[2] - 1) + 1, frames.shape
        starts = [t1, *step_ends]
        times.update(prepare_s=t1 - t0, step_s=[b - a for a, b in zip(starts, starts[1:])], sampling_s=t2 - t1,
                     decode_s=t3 - t2, total_s=t3 - t0, peak_decode_gb=peak_gb(device))  # fmt: skip
        return times

    warm = clip(1, decode_latents=min(3, latents_of(args.frames)))
    print(f"[{impl}] warm-up clip (1 step, short decode): {warm['total_s']:.1f} s", flush=True)
    timed = clip(args.steps, decode_latents=None)
    return summarize(impl, args, device, warm, timed)


def diffusers_worker(args, device: torch.device, dtype: torch.dtype) -> dict:
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler, SanaWMPipeline, SanaWMTransformer3DModel
    from PIL import Image

    torch.manual_seed(0)
    with torch.device(device):
        transformer = SanaWMTransformer3DModel(**(TINY_DIT if args.tiny else {}))
    transformer = transformer.to(dtype).eval()
    vae = make_vae(args, device, dtype)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=FLOW_SHIFT)
    pipe = SanaWMPipeline(tokenizer=None, text_encoder=None, vae=vae.autoencoder, transformer=transformer,
                          scheduler=scheduler)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    inp = clip_inputs(args)
    image = Image.fromarray(inp["image"].numpy())
    h, w = inp["size"]
    embeds = dict(
        prompt_embeds=inp["text"][:, None].to(device, dtype), prompt_attention_mask=inp["text_mask"].to(device),
        negative_prompt_embeds=inp["negative"][:, None].to(device, dtype),
        negative_prompt_attention_mask=inp["negative_mask"].to(device),
    )  # fmt: skip

    def clip(steps: int, frames: int) -> dict:
        step_ends: list[float] = []
        peaks: list = []

        def on_step_end(pipeline, i, t, kwargs):
            sync(device)
            step_ends.append(time.perf_counter())
            if i == steps - 1:  # sampling done: what follows is the decode
                peaks.append(peak_gb(device))
                reset_peak(device)
            return {}

        reset_peak(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = pipe(image, "", c2w=inp["c2w"][:frames].float().numpy(), intrinsics=inp["intrinsics"], height=h,
                       width=w, num_frames=frames, num_inference_steps=steps, guidance_scale=args.cfg,
                       generator=torch.Generator(device).manual_seed(0), output_type="pt",
                       callback_on_step_end=on_step_end, **embeds)  # fmt: skip
            sync(device)
        t3 = time.perf_counter()
        assert out.frames.shape[0] == frames, out.frames.shape
        # The first step's interval also holds the preparation (image encode, camera, noise):
        # count the median later step there as the step, the rest as prepare.
        deltas = [b - a for a, b in zip(step_ends, step_ends[1:])]
        step = statistics.median(deltas) if deltas else None
        first = step_ends[0] - t0
        prepare = first - step if step is not None else 0.0
        return dict(prepare_s=prepare, step_s=[first - prepare, *deltas], sampling_s=step_ends[-1] - t0 - prepare,
                    decode_s=t3 - step_ends[-1], total_s=t3 - t0, peak_sampling_gb=peaks[0] if peaks else None,
                    peak_decode_gb=peak_gb(device), diffusers_version=diffusers.__version__)  # fmt: skip

    warm = clip(1, frames=min(args.frames, 17))
    print(f"[diffusers] warm-up clip (1 step, {min(args.frames, 17)} frames): {warm['total_s']:.1f} s", flush=True)
    timed = clip(args.steps, frames=args.frames)
    return summarize("diffusers", args, device, warm, timed)


def latents_of(frames: int) -> int:
    return (frames - 1) // 8 + 1


def summarize(impl: str, args, device: torch.device, warm: dict, timed: dict) -> dict:
    steps = timed.pop("step_s")
    s_per_step = statistics.median(steps)
    extrapolated = timed["prepare_s"] + args.clip_steps * s_per_step + timed["decode_s"]
    peaks = [p for p in (timed.get("peak_sampling_gb"), timed.get("peak_decode_gb")) if p is not None]
    rec = {
        "impl": impl, "precision": precision_of(impl, device), "mode": "clip", "frames": args.frames,
        "clip_steps": args.clip_steps, "measured_steps": args.steps, "cfg": args.cfg, "batch": 2,
        "s_per_clip_extrapolated": extrapolated, "clips_per_hour_extrapolated": 3600 / extrapolated,
        "s_per_step": s_per_step, "step_s": steps, "s_measured": timed.pop("total_s"),
        "peak_gb": max(peaks) if peaks else None, "gpu": gpu_name(device), "torch": torch.__version__,
        "first_call_s": warm["total_s"],
        "latents": f"{latents_of(args.frames)}x{'2x3' if args.tiny else '22x40'}", **timed,
    }  # fmt: skip
    print(f"[{impl}] {args.steps} steps: {s_per_step:.3f} s/step, decode {timed['decode_s']:.1f} s, "
          f"extrapolated {args.clip_steps}-step clip {extrapolated:.1f} s", flush=True)  # fmt: skip
    return rec


def gpu_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def precision_of(impl: str, device: torch.device) -> str:
    """--tiny runs on the CPU in float32 (FP8 modules emulated)."""
    return PRECISION[impl] if device.type == "cuda" or PRECISION[impl] == "fp8" else "fp32"


# ----------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------


def run_worker(impl: str, args, timeout: float) -> dict | None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "record.json"
        cmd = [sys.executable, __file__, "--worker", impl, "--worker-json", str(out), "--frames", str(args.frames),
               "--steps", str(args.steps), "--clip-steps", str(args.clip_steps), "--cfg", str(args.cfg),
               "--text-len", str(args.text_len)] + (["--tiny"] if args.tiny else [])  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, timeout=timeout, check=False, env=env)
            ok, reason = proc.returncode == 0 and out.exists(), f"exit code {proc.returncode}"
        except subprocess.TimeoutExpired:
            ok, reason = False, f"timed out after {timeout:.0f} s"
        print(f"[{impl}] process took {time.perf_counter() - t0:.0f} s", flush=True)
        if not ok:
            print(f"[{impl}] FAILED: {reason}" + (" (after writing its record: kept)" if out.exists() else ""),
                  flush=True)  # fmt: skip
        return json.loads(out.read_text()) if out.exists() else None


def table(records: list[dict]) -> str:
    by = {r["impl"]: r for r in records}
    d = by.get("diffusers")
    lines = [
        f"(extrapolated: prepare + {records[0]['clip_steps']} x s/step + decode, from "
        f"{records[0]['measured_steps']} measured full-size steps; {records[0]['frames']} frames, CFG B=2)",
        f"{'impl':>15} {'prec':>5} {'s/step':>8} {'prep s':>7} {'decode s':>8} {'clip s (extrap.)':>16} "
        f"{'clips/h':>8} {'peak GB':>8} {'vs diffusers':>12}",
    ]  # fmt: skip
    for impl in IMPLS:
        r = by.get(impl)
        if r is None:
            continue
        s = r["s_per_clip_extrapolated"]
        vs = f"{d['s_per_clip_extrapolated'] / s:.2f}x" if d else "-"
        peak = "n/a" if r["peak_gb"] is None else f"{r['peak_gb']:.1f}"
        lines.append(f"{impl:>15} {r['precision']:>5} {r['s_per_step']:>8.3f} {r['prepare_s']:>7.2f} "
                     f"{r['decode_s']:>8.2f} {s:>16.1f} {r['clips_per_hour_extrapolated']:>8.1f} {peak:>8} "
                     f"{vs:>12}")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    from sanawm.benchmark import merge_records

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--frames", type=int, default=961, help="video frames, 8k+1 (default 961)")
    parser.add_argument("--steps", type=int, default=3, help="full-size sampling steps measured (default 3)")
    parser.add_argument("--clip-steps", type=int, default=60, help="steps of the extrapolated clip (default 60)")
    parser.add_argument("--cfg", type=float, default=5.0, help="text guidance scale (default 5)")
    parser.add_argument("--text-len", type=int, default=300)
    parser.add_argument("--tiny", action="store_true", help="tiny models on the CPU, float32 (smoke test)")
    parser.add_argument("--timeout", type=int, default=200, help="seconds per implementation's process")
    parser.add_argument("--budget", type=int, default=540, help="seconds for all processes together")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/hopper.json"))
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.frames < 9 or (args.frames - 1) % 8:
        parser.error(f"--frames must be 8k+1 and at least 9, got {args.frames}")
    if args.steps < 1 or args.clip_steps < 1:
        parser.error("--steps and --clip-steps must be >= 1")

    if args.worker:
        device = torch.device("cpu" if args.tiny else "cuda")
        dtype = torch.float32 if args.tiny else torch.bfloat16
        if args.worker == "sanawm-fp8" and device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
            raise SystemExit("sanawm-fp8 needs an sm89+ GPU")
        if args.worker == "diffusers":
            rec = diffusers_worker(args, device, dtype)
        else:
            rec = sanawm_worker(args.worker, args, device, dtype)
        Path(args.worker_json).write_text(json.dumps(rec))
        # Done: skip interpreter teardown (torch.compile's worker pools can take many seconds to
        # shut down, which once ran a finished worker into its timeout).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    records: list[dict] = []
    deadline = time.monotonic() + args.budget
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for impl in args.impls:
        left = deadline - time.monotonic()
        if left < 20:
            print(f"[{impl}] skipped: the --budget of {args.budget} s is spent", flush=True)
            continue
        rec = run_worker(impl, args, min(args.timeout, left))
        if rec is not None:
            records.append(rec)
            args.json.write_text(json.dumps(merge_records(args.json, [rec]), indent=1) + "\n")
    print(f"\nwrote {len(records)} records to {args.json}")
    if records:
        print(table(records))


if __name__ == "__main__":
    main()
