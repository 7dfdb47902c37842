"""The camera branch's UCPE transform of one tensor on one GPU: inductor vs the Triton kernel.

    python scripts/bench_ucpe.py                  # a 961-frame clip: 121 x 880 tokens, 20 heads of 112

Shapes of the 2.6B preset at 704x1280, bf16, x in the token-major layout the projections hand
over ((B, N, H, D) memory seen as (B, H, N, D)), one 4x4 float32 matrix per token. Rows: the
reference (`ucpe_transform_reference`: transform + both sums of squares) compiled by inductor on
its own, the custom op as the model runs it, and the kernel alone at other tile shapes (tokens
per program, warps). Time: median of 10 after 3 warm-ups, CUDA events. Error: relative L2 of
the output vs the float32 reference (one bf16 rounding is ~1.5e-3). GB/s counts the bytes one
pass must move (read x, write the output).
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    from sanawm.benchmark import format_kernel_rows, rel_l2_column, time_kernel_rows
    from sanawm.ops.ucpe import launch, ucpe_transform_op, ucpe_transform_reference

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=961, help="video frames (default 961)")
    args = parser.parse_args()
    device = torch.device("cuda")
    B, H, D = 1, 20, 112
    N = ((args.frames - 1) // 8 + 1) * 22 * 40
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(B, N, H, D, device=device, dtype=torch.bfloat16, generator=g).transpose(1, 2)
    m = torch.randn(B, N, 4, 4, device=device, generator=g) / 2
    angles = 6.0 * torch.rand(N, D // 4, device=device, generator=g)
    cos, sin = angles.cos(), angles.sin()
    out = torch.empty(B, N, H, D, device=device, dtype=torch.bfloat16).transpose(1, 2)
    ss_in = torch.empty(B, H, N, device=device)
    ss_out = torch.empty_like(ss_in)
    moved = 2 * x.numel() * 2  # bytes: read x, write the result, bf16
    compiled_reference = torch.compile(ucpe_transform_reference)
    with torch.inference_mode():
        ref = ucpe_transform_reference(x.float(), m, cos, sin, False)[0]
        rows = [
            ("inductor: compiled reference", lambda: compiled_reference(x, m, cos, sin, False)[0]),
            ("op (model's path, default tiles)", lambda: ucpe_transform_op(x, m, cos, sin, False)[0]),
        ]
        for block_n, warps in ((16, 4), (32, 4), (32, 8), (64, 4), (64, 8), (128, 8)):
            rows.append((f"kernel alone, {block_n} tokens, {warps} warps",
                         lambda block_n=block_n, warps=warps: launch(x, m, cos, sin, False, out, ss_in, ss_out,
                                                                     block_n=block_n, num_warps=warps)))  # fmt: skip
        table = time_kernel_rows(rows, device, moved, rel_l2_column(ref, out), warmup=3, iters=10)
    print(f"\nx {tuple(x.shape)} bf16 token-major, {torch.cuda.get_device_name(device)}")
    print(format_kernel_rows(table, 40))


if __name__ == "__main__":
    main()
