"""Where one forward of the stage-1 DiT spends its GPU time: the top CUDA kernels.

    python scripts/profile_dit.py                       # 2.6B preset, bf16, 121x22x40, fused GDN
    python scripts/profile_dit.py --gdn-backend torch   # the same with the PyTorch GDN path
    python scripts/profile_dit.py --tiny --device cpu   # smoke test (CPU ops instead of kernels)

Random weights and inputs as in scripts/bench_dit.py; one warm-up forward, then one profiled.
"""

from __future__ import annotations

import argparse

import torch
from bench_dit import make_inputs, parse_size
from torch.profiler import ProfilerActivity, profile

from sanawm.model import build_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=None, help="latent size TxHxW (default 121x22x40)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--gdn-backend", default="auto", choices=["auto", "torch", "triton"])
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    dtype = torch.float32 if args.tiny else torch.bfloat16
    size = args.size or ((3, 4, 6) if args.tiny else (121, 22, 40))
    preset = "tiny" if args.tiny else "sanawm-2.6b"
    torch.manual_seed(0)
    model = build_preset(preset, device="meta", gdn_backend=args.gdn_backend).to_empty(device=device)
    model.init_weights()
    model = model.to(dtype).eval()
    inputs = make_inputs(model, size, device, dtype, min(300, model.config.max_text_len))
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with torch.inference_mode():
        model(**inputs)
        if cuda:
            torch.cuda.synchronize(device)
        with profile(activities=activities) as prof:
            model(**inputs)
            if cuda:
                torch.cuda.synchronize(device)
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = prof.key_averages()
    total = sum(getattr(e, "self_device_time_total" if cuda else "self_cpu_time_total") for e in events)
    print(f"{preset} {'x'.join(map(str, size))} {dtype} gdn_backend={args.gdn_backend}: "
          f"{total / 1e3:.1f} ms of {'kernel' if cuda else 'CPU'} time in one forward")  # fmt: skip
    print(events.table(sort_by=key, row_limit=args.rows, max_name_column_width=70))


if __name__ == "__main__":
    main()
