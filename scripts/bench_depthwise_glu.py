"""The FFN's SiLU -> 3x3 depthwise -> GLU on one GPU: three kernels vs the fused Triton kernel.

    python scripts/bench_depthwise_glu.py                 # one 90-frame slice of a 961-frame clip
    python scripts/bench_depthwise_glu.py --frames 30

Shapes of the 2.6B preset at 704x1280 (22x40 latents, 2F = 11200 channels), bf16, the layout the
FFN hands over (channels last). Rows: the reference form (SiLU, cuDNN depthwise conv, GLU), the
custom op as the model runs it (SiLU, then `sanawm.ops.depthwise_glu.launch` with its default
tiles), and the kernel alone on SiLU(pre) at other tile shapes (pixels x channels, warps).
Time: median of 5 after 2 warm-ups, CUDA events. Each row's error: relative L2 vs the reference
in float32. GB/s counts the bytes the fused form must move (read 2F, write F).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F


def main() -> None:
    from sanawm.benchmark import format_kernel_rows, rel_l2_column, time_kernel_rows
    from sanawm.model.config import SanaWMConfig
    from sanawm.ops.depthwise_glu import depthwise_glu_op, launch, silu_depthwise_glu_reference

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=90, help="latent frames in the slice (default 90)")
    args = parser.parse_args()
    device = torch.device("cuda")
    cfg = SanaWMConfig()
    f2 = 2 * cfg.ffn_hidden
    g = torch.Generator(device=device).manual_seed(0)
    pre = torch.randn(args.frames, 22, 40, f2, device=device, dtype=torch.bfloat16, generator=g)
    weight = (torch.randn(f2, 1, 3, 3, device=device, generator=g) / 3).to(torch.bfloat16)
    bias = (torch.randn(f2, device=device, generator=g) / 10).to(torch.bfloat16)
    act = F.silu(pre)
    out = pre.new_empty(*pre.shape[:-1], f2 // 2)
    moved = pre.numel() * 2 * 1.5  # bytes: read 2F, write F, bf16
    with torch.inference_mode():
        ref = silu_depthwise_glu_reference(pre.float(), weight.float(), bias.float())
        rows = [("reference: SiLU + cuDNN depthwise + GLU", lambda: silu_depthwise_glu_reference(pre, weight, bias)),
                ("op: SiLU + fused kernel (default tiles)", lambda: depthwise_glu_op(F.silu(pre), weight, bias)),
                ("SiLU alone", lambda: F.silu(pre))]  # fmt: skip
        for bw, bc, warps in ((8, 128, 4), (8, 64, 4), (8, 256, 8), (16, 128, 8), (4, 256, 4), (32, 64, 4), (8, 128, 8)):
            rows.append((f"kernel alone, {bw} px x {bc} ch, {warps} warps",
                         lambda bw=bw, bc=bc, warps=warps: launch(act, weight, bias, out, block_w=bw, block_c=bc,
                                                                   num_warps=warps)))  # fmt: skip
        error = rel_l2_column(ref, out, skip=("SiLU alone",))
        table = time_kernel_rows(rows, device, moved, error, warmup=2, iters=5)
    print(f"\nslice {tuple(pre.shape)} bf16, {torch.cuda.get_device_name(device)}")
    print(format_kernel_rows(table, 45))


if __name__ == "__main__":
    main()
