"""Time `WorldModel.generate` end to end with a randomly initialised model of a given size.

Meant for sizing the embedded model against the CPU budget (a 33-frame clip in < 3 minutes on
2 cores) and for GPU timing of the official shapes. Random weights: the frames are noise, the
time is real. Example:

    python scripts/bench_generate.py --preset small --size 128x128 --frames 33 --steps 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from sanawm.device import choose_device
from sanawm.model import build_preset
from sanawm.modeldir import GenerationSettings, save_model_dir
from sanawm.pipeline import WorldModel
from sanawm.vae import CompactVAE


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", help="sanawm.model preset (default: small)")
    p.add_argument("--depth", type=int, help="override the preset's depth")
    p.add_argument("--hidden", type=int, help="override the preset's hidden size (multiple of 112)")
    p.add_argument("--size", default="128x128", help="HxW (default 128x128)")
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--camera-cfg", type=float, default=1.0)
    p.add_argument("--mode", choices=("bidirectional", "streaming"), default="bidirectional")
    p.add_argument("--chunk-size", type=int, default=2, help="latent frames per streaming chunk")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    args = p.parse_args()
    device = choose_device(args.device)

    height, width = (int(v) for v in args.size.lower().split("x"))
    vae = CompactVAE()
    overrides = dict(in_channels=vae.latent_channels, plucker_channels=6 * vae.temporal_stride,
                     caption_channels=64, max_text_len=8, softmax_attn_dtype=None)  # fmt: skip
    if args.depth:
        overrides["depth"] = args.depth
        overrides["softmax_blocks"] = tuple(i for i in range(args.depth) if (i + 1) % 4 == 0)
    if args.hidden:
        overrides["hidden_size"] = args.hidden
    transformer = build_preset(args.preset, **overrides)
    transformer.init_weights()
    params = sum(p.numel() for p in transformer.parameters())
    settings = GenerationSettings(height=height, width=width, steps=args.steps, cfg=1.0,
                                  camera_cfg=args.camera_cfg, chunk_size=args.chunk_size)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        save_model_dir(Path(tmp), transformer, vae, settings)
        wm = WorldModel.load(tmp, device=device, dtype=torch.float32)
    action = f"w-{args.frames - 1}"
    wm.generate(action="w-4", steps=1, mode=args.mode)  # warm-up
    start = time.perf_counter()
    result = wm.generate(action=action, frames=args.frames, mode=args.mode)
    seconds = time.perf_counter() - start
    print(f"preset {args.preset} ({params / 1e6:.1f} M params), {args.mode}, {result.frames.shape[0]} frames "
          f"{height}x{width}, {args.steps} steps, camera_cfg {args.camera_cfg}, {torch.get_num_threads()} threads "
          f"on {device}: {seconds:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
