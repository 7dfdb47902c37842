"""Time one forward of the stage-1 DiT (no CFG) and check the GDN op on the device.

    python scripts/bench_dit.py                 # 2.6B preset, bf16, on CUDA
    python scripts/bench_dit.py --check-gdn     # plus fast GDN vs float64 recurrent reference
    python scripts/bench_dit.py --tiny          # tiny preset on CPU (smoke test of this script)

Random weights (the from-scratch init), random inputs with a real camera path (the helpers live
in `sanawm.benchmark`; `sanawm bench` is the full command: JSON/CSV, streaming mode). Prints a
table: latent size, video frames, tokens, median seconds per forward, peak memory.
Reference numbers (H100, bf16): 961 frames 4.73 s / 17.9 GB, 321 frames 1.16 s, 81 frames 0.30 s.
"""

from __future__ import annotations

import argparse

import torch

from sanawm.benchmark import make_inputs, parse_latent_size, random_model, time_forward
from sanawm.device import choose_device
from sanawm.ops.gdn import delta_rule, gdn, gdn_reference

FULL_SIZES = ["121x22x40", "41x22x40", "11x22x40"]
TINY_SIZES = ["5x4x6", "9x4x6"]


def parse_size(text: str) -> tuple[int, int, int]:
    try:
        return parse_latent_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def check_gdn(device) -> None:
    """Fast (chunked) GDN and camera delta rule vs the recurrent reference on the device."""
    g = torch.Generator(device="cpu").manual_seed(0)
    B, H, T, S, D = 1, 4, 9, 64, 112

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(device)

    q, k = rnd(B, H, T, S, D).relu(), rnd(B, H, T, S, D).relu() / (D * S) ** 0.5
    v, q_rot, k_rot = rnd(B, H, T, S, D), rnd(B, H, T, S, D), rnd(B, H, T, S, D) / (D * S) ** 0.5
    beta = torch.rand(B, H, T, S, generator=g).to(device)
    gamma = (0.5 + 0.5 * torch.rand(B, H, T, generator=g)).to(device)
    x = (q, k, v, q_rot, k_rot, beta, gamma)
    x64 = tuple(t.double() for t in x)
    print("GDN check (relative L2 vs float64 recurrent reference):")
    for name, chunks in [("bidirectional", None), ("chunk-causal", [0, 4, 7])]:
        ref, _ = gdn_reference(*x64, eps=1e-8, chunk_starts=chunks)
        ref32, _ = gdn_reference(*x, eps=1e-8, chunk_starts=chunks)
        fast, _ = gdn(*x, eps=1e-8, chunk_starts=chunks)
        cam_ref, _ = gdn_reference(q_rot.double(), k_rot.double(), v.double(), q_rot.double(), k_rot.double(),
                                   beta.double(), gamma.double(), eps=None, chunk_starts=chunks)  # fmt: skip
        cam_fast, _ = delta_rule(q_rot, k_rot, v, beta, gamma, chunk_starts=chunks)

        def err(a, b):
            return ((a.double() - b).norm() / b.norm()).item()

        print(f"  {name:14s} gdn fast {err(fast, ref):.2e}  gdn fp32 recurrent {err(ref32, ref):.2e}  "
              f"delta_rule fast {err(cam_fast, cam_ref):.2e}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny preset on CPU, small sizes")
    parser.add_argument("--sizes", nargs="+", type=parse_size, help="latent sizes TxHxW")
    parser.add_argument("--device", default=None, help="default: cuda if available (cpu with --tiny)")
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--text-len", type=int, default=300)
    parser.add_argument("--check-gdn", action="store_true", help="compare the fast GDN path with the reference")
    args = parser.parse_args()

    device = choose_device(args.device or ("cpu" if args.tiny else None))
    dtype = getattr(torch, args.dtype or ("float32" if args.tiny else "bfloat16"))
    sizes = args.sizes or [parse_size(s) for s in (TINY_SIZES if args.tiny else FULL_SIZES)]
    torch.manual_seed(0)

    if args.check_gdn:
        check_gdn(device)

    preset = "tiny" if args.tiny else "sanawm-2.6b"
    model = random_model(preset, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    print(f"{preset}: {params / 1e9:.3f} B parameters, {dtype}, {device}")
    print(f"{'latents':>12} {'frames':>7} {'tokens':>8} {'s/forward':>10} {'peak GB':>8}")
    for size in sizes:
        frames, height, width = size
        text_len = min(args.text_len, model.config.max_text_len)
        inputs = make_inputs(model, size, device, dtype, text_len)
        seconds, peak = time_forward(model, inputs, device, args.warmup, args.iters)
        video_frames = (frames - 1) * 8 + 1
        tokens = frames * height * width
        peak_text = "n/a" if peak is None else f"{peak:.1f}"
        print(f"{f'{frames}x{height}x{width}':>12} {video_frames:>7} {tokens:>8} {seconds:>10.3f} {peak_text:>8}")
        del inputs
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
