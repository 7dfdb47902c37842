"""FlashAttention-4 at head dim 112 on one H200: does the memory layout of q / k / v matter?

    python scripts/bench_flash4_layout.py                # 961 frames (106,480 tokens), 20 heads
    python scripts/bench_flash4_layout.py --frames 321

FA4 takes (B, N, H, D) tensors of any strides. The model's q / k / v are token-major (each
token's 20 heads side by side: a head's row is 224 bytes every 4,480); head-major tensors
(B, H, N, D) contiguous, handed over transposed, keep each head's keys in one block. FA4 reads
the keys and values once per query tile, so their layout decides how they stream through L2.
Rows: the kernel alone (`_flash_attn_fwd` with sanawm's tiles) on each layout of (q, k / v),
the transposing copy of k and v alone, and `sanawm.ops.flash.flash4_attention` as the model
calls it (token-major in). Time: median of `--iters` after two warm-ups, CUDA events; each row's
output is compared with the token-major row's (it must be the same attention).
"""

from __future__ import annotations

import argparse

import torch

HEADS, HEAD_DIM, TOKENS_PER_FRAME = 20, 112, 22 * 40


def main() -> None:
    from flash_attn.cute.interface import _flash_attn_fwd

    from sanawm.benchmark import time_call
    from sanawm.ops.flash import FLASH4_SM90_TILES, flash4_attention

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=961)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda")
    n = ((args.frames - 1) // 8 + 1) * TOKENS_PER_FRAME
    g = torch.Generator(device=device).manual_seed(0)
    token = [torch.randn(1, n, HEADS, HEAD_DIM, device=device, generator=g, dtype=torch.bfloat16) for _ in range(3)]
    head = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in token]  # same values, head-major memory
    tile_m, tile_n, rs, overlap = FLASH4_SM90_TILES[HEAD_DIM]
    scale = HEAD_DIM**-0.5

    def kernel(q, k, v):
        return _flash_attn_fwd(q, k, v, softmax_scale=scale, causal=False, tile_mn=(tile_m, tile_n),
                               mma_pv_is_rs=rs, intra_wg_overlap=overlap)[0]  # fmt: skip

    rows = [
        ("kernel, q k v token-major", lambda: kernel(*token)),
        ("kernel, q token-major, k v head-major", lambda: kernel(token[0], head[1], head[2])),
        ("kernel, q k v head-major", lambda: kernel(*head)),
        ("k and v to head-major (the copies alone)",
         lambda: [t.transpose(1, 2).contiguous() for t in token[1:]]),
        ("sanawm flash4_attention op, token-major in", lambda: flash4_attention(*token, scale)),
    ]  # fmt: skip
    flops = 4 * n * n * HEADS * HEAD_DIM
    with torch.inference_mode():
        ref = kernel(*token).float()
        table = []
        for name, fn in rows:
            out = fn()
            err = f"{((out.float() - ref).norm() / ref.norm()).item():.1e}" if torch.is_tensor(out) else "-"
            ms = 1e3 * time_call(fn, device, 2, args.iters)
            table.append((name, ms, err))
            print(f"{name}: {ms:.2f} ms", flush=True)
    print(f"\n{n} tokens x {HEADS} heads x {HEAD_DIM}, bf16, tiles {tile_m}x{tile_n}, {torch.cuda.get_device_name(device)}")
    print(f"{'':46} {'ms':>8} {'TFLOP/s':>8} {'vs token-major':>15}")
    for name, ms, err in table:
        tf = f"{flops / ms / 1e9:8.0f}" if err != "-" else f"{'-':>8}"
        print(f"{name:46} {ms:8.2f} {tf} {err:>15}")


if __name__ == "__main__":
    main()
