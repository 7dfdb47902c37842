"""The softmax blocks' attention on one GPU: PyTorch SDPA backends vs FlashAttention-4 (sm90).

    python scripts/bench_attention.py                    # 81 / 321 / 961 frames at 704x1280
    python scripts/bench_attention.py --frames 961 --iters 5

Shapes are SANA-WM's: B=1, 20 heads of 112, all tokens of the clip (22x40 per latent frame:
9,680 / 36,080 / 106,480 tokens for 81 / 321 / 961 frames), no mask, bf16. Kernels:
- sdpa-cudnn, sdpa-flash: `F.scaled_dot_product_attention` restricted to one backend (both
  pad head dim 112 to 128 internally);
- flash4: `sanawm.ops.flash.attention(..., "flash4")`, the FA4 forward at head dim 112 with
  sanawm's tiles for 112 (`FLASH4_SM90_TILES`), on (B, N, H, D) token-major tensors as the
  model hands them over;
- flash4-d128: FA4 on heads zero-padded to 128, with its own tiles for 128 (padding included).
Time: median of `--iters` calls after two warm-up calls (the first compiles FA4's kernel),
CUDA events. Accuracy: relative L2 of each kernel's output vs float32 math attention on the
first `--check-tokens` queries (all keys), same inputs. TFLOP/s count 4 * Nq * Nk * H * 112.

`--sweep-flash4` also times FA4's sm90 forward at head dim 112 with other tile shapes and
pipelining flags, starting with the ones FA4 picks itself (128x128, P@V from registers,
intra-warpgroup overlap); the best one is what `FLASH4_SM90_TILES` holds.

Writes `--json` (records {"impl", "precision", "mode": "attention", "frames", "tokens",
"s_per_call", "tflops", "rel_l2_vs_f32", "gpu"}) and prints a table last.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

HEADS, HEAD_DIM, TOKENS_PER_FRAME = 20, 112, 22 * 40


def cuda_time(fn, iters: int) -> float:
    """Median GPU seconds of `iters` calls after two warm-up calls (the first compiles FA4)."""
    from sanawm.benchmark import time_call

    return time_call(fn, torch.device("cuda"), warmup=2, iters=iters)


def kernels() -> dict:
    from sanawm.ops.flash import attention

    def sdpa(backend):
        def run(q, k, v):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v)

        return run

    def flash4_padded(q, k, v):
        pad = lambda t: F.pad(t, (0, 128 - HEAD_DIM))  # noqa: E731
        return attention(pad(q), pad(k), pad(v), HEAD_DIM**-0.5, "flash4")[..., :HEAD_DIM]

    return {
        "sdpa-cudnn": sdpa(SDPBackend.CUDNN_ATTENTION),
        "sdpa-flash": sdpa(SDPBackend.FLASH_ATTENTION),
        "flash4": lambda q, k, v: attention(q, k, v, None, "flash4"),
        "flash4-d128": flash4_padded,
    }


# (tile_m, tile_n, P@V from registers, intra-warpgroup overlap); the first is FA4's own choice.
FLASH4_SWEEP = [(128, 128, True, True), (128, 144, True, True), (192, 128, False, True), (192, 144, False, True),
                (192, 144, False, False), (192, 160, False, True), (192, 176, False, True), (192, 192, False, True),
                (192, 96, False, True), (192, 144, True, True), (256, 128, False, True), (128, 192, False, True)]  # fmt: skip


def sweep_flash4(q, k, v, iters: int) -> list[tuple]:
    from flash_attn.cute.interface import _flash_attn_fwd

    rows = []
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    for tile_m, tile_n, rs, overlap in FLASH4_SWEEP:
        run = lambda: _flash_attn_fwd(qt, kt, vt, softmax_scale=HEAD_DIM**-0.5, tile_mn=(tile_m, tile_n),  # noqa: E731
                                      mma_pv_is_rs=rs, intra_wg_overlap=overlap)[0]  # fmt: skip
        try:
            with torch.inference_mode():
                seconds = cuda_time(run, iters)
        except Exception as exc:
            print(f"[flash4 sweep] {tile_m}x{tile_n} rs={rs} overlap={overlap}: FAILED {type(exc).__name__}: {str(exc)[:200]}")
            continue
        print(f"[flash4 sweep] {tile_m}x{tile_n} rs={rs} overlap={overlap}: {seconds * 1e3:.1f} ms", flush=True)
        rows.append((tile_m, tile_n, rs, overlap, seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", nargs="+", type=int, default=[81, 321, 961])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--check-tokens", type=int, default=2048)
    parser.add_argument("--impls", nargs="+", default=["sdpa-cudnn", "sdpa-flash", "flash4", "flash4-d128"])
    parser.add_argument("--json", default="benchmarks/attention_h200.json")
    parser.add_argument("--sweep-flash4", action="store_true", help="FA4 tile shapes at the largest frame count")
    args = parser.parse_args()
    device = torch.device("cuda")
    from sanawm.ops.flash import flash4_unavailable

    reason = flash4_unavailable(device)
    runs = kernels()
    records = []
    for frames in args.frames:
        n = ((frames - 1) // 8 + 1) * TOKENS_PER_FRAME
        g = torch.Generator(device).manual_seed(frames)
        # Token-major (B, N, H * D) like the model's projections, viewed as (B, H, N, D).
        q, k, v = (torch.randn(1, n, HEADS * HEAD_DIM, device=device, generator=g, dtype=torch.bfloat16)
                   .unflatten(-1, (HEADS, HEAD_DIM)).transpose(1, 2) for _ in range(3))  # fmt: skip
        m = min(args.check_tokens, n)
        with sdpa_kernel(SDPBackend.MATH):
            ref = F.scaled_dot_product_attention(q[:, :, :m].float(), k.float(), v.float())
        for impl in args.impls:
            if impl.startswith("flash4") and reason:
                print(f"[{impl}] skipped: {reason}")
                continue
            try:
                with torch.inference_mode():
                    out = runs[impl](q, k, v)
                    err = ((out[:, :, :m].double() - ref.double()).norm() / ref.double().norm()).item()
                    seconds = cuda_time(lambda: runs[impl](q, k, v), args.iters)
            except Exception as exc:  # one kernel failing must not lose the others' numbers
                print(f"[{impl}] {frames} frames FAILED: {type(exc).__name__}: {str(exc)[:300]}")
                continue
            flops = 4 * n * n * HEADS * HEAD_DIM
            rec = {"impl": impl, "precision": "bf16", "mode": "attention", "frames": frames, "tokens": n,
                   "heads": HEADS, "head_dim": HEAD_DIM, "s_per_call": seconds, "tflops": flops / seconds / 1e12,
                   "rel_l2_vs_f32": err, "gpu": torch.cuda.get_device_name(device), "torch": torch.__version__}  # fmt: skip
            print(f"[{impl}] {frames} frames: {seconds * 1e3:.1f} ms, {rec['tflops']:.0f} TFLOP/s, rel L2 {err:.2e}",
                  flush=True)  # fmt: skip
            records.append(rec)
        sweep = sweep_flash4(q, k, v, args.iters) if args.sweep_flash4 and not reason and frames == max(args.frames) else []
        del q, k, v, ref
        torch.cuda.empty_cache()
    for tile_m, tile_n, rs, overlap, seconds in sweep:
        print(f"flash4 {tile_m}x{tile_n} rs={rs} overlap={overlap} at {max(args.frames)} frames: {seconds * 1e3:.1f} ms")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(records, indent=1) + "\n")
    print(f"\n{'impl':>12} {'frames':>6} {'tokens':>7} {'ms':>8} {'TFLOP/s':>8} {'rel L2 vs f32':>14}")
    for r in records:
        print(f"{r['impl']:>12} {r['frames']:>6} {r['tokens']:>7} {r['s_per_call'] * 1e3:>8.1f} {r['tflops']:>8.0f} "
              f"{r['rel_l2_vs_f32']:>14.2e}")  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
