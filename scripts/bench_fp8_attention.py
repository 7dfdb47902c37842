"""The softmax blocks' attention in FP8 (`sanawm.ops.fp8_attention`, `sanawm.ops.flash3`) vs cuDNN SDPA on one GPU.

    python scripts/bench_fp8_attention.py                       # 81 / 321 / 961 frames, CUDA
    python scripts/bench_fp8_attention.py --kernels sdpa-cudnn flash3-fp8 flash3-bf16 --no-sweep
    python scripts/bench_fp8_attention.py --tiny                # CPU smoke test (emulation, tiny sizes)

Shapes are SANA-WM's: B=1, 20 heads of 112, all tokens of the clip (22x40 per latent frame),
no mask. Inputs (bf16):
- "gauss": unit Gaussian q, k, v, token-major like the model's projections;
- "model-main" / "model-cam": the q, k, v that the first softmax block of the 2.6B model (random
  weights, from-scratch init) hands to its two attentions (main: after RMSNorm and RoPE; camera:
  after the UCPE transforms and RMS clamp, softmax scale 1/sqrt(128)) on random latents, text
  and a moving camera of that clip length (`sanawm.benchmark.make_inputs`);
- "sharp": Gaussian q, k of standard deviation 2 (scores of standard deviation 4: a peaked
  softmax, as trained models have more than random ones).
Kernels (`--kernels`): "sdpa-cudnn" (`F.scaled_dot_product_attention`, cuDNN, bf16), "fp8"
(quantisation + the Triton kernel, autotuned; `sanawm.ops.flash.attention(..., "fp8")`),
"flash3-fp8" (per-head quantisation + FlashAttention-3's FP8 forward, `fa3-fwd`) and
"flash3-bf16" (FA3's bf16 forward at head dim 112, for comparison; not a model path); time of
each FP8 kernel alone ("fp8 kernel", "flash3-fp8 kernel") and of each of its configurations at the largest frame count
and of the polynomial-exp2 ones the autotuner leaves out (with the error on the "gauss" rows;
two configurations once more with Hopper's own truncating FP8 accumulation in P . V across
tiles, to show what the fp32 accumulation costs and buys).
Accuracy: relative L2 and cosine against float32 attention on `--check-queries` query rows
spread over the sequence (all keys), and each FP8 kernel against its float32 emulation
(`sanawm.ops.fp8_attention.emulate`, the CPU form of both ops) on the same rows. Time: median of
`--iters` calls after 2 warm-up calls, CUDA events; TFLOP/s count 4 * N^2 * 20 * 112.

Writes records {"impl", "precision", "mode": "attention", "frames", "tokens", "s_per_call",
"tflops", "accuracy", "gpu", ...} to `--out` and merges them into `--json`
(benchmarks/hopper.json) with `sanawm.benchmark.merge_records`; prints a table last.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

HEADS, HEAD_DIM, TOKENS_PER_FRAME = 20, 112, 22 * 40


class _Captured(Exception):
    pass


def capture_model_inputs(model, frames: int, tiny: bool, device, dtype) -> dict[str, tuple]:
    """q, k, v (B, H, N, D) and scale of the first softmax block's two attentions, from a
    forward that stops right after them."""
    import sanawm.model.attention as attn_mod
    from sanawm.benchmark import make_inputs

    size = ((frames - 1) // 8 + 1, 4, 6) if tiny else ((frames - 1) // 8 + 1, 22, 40)
    inputs = make_inputs(model, size, device, dtype, min(300, model.config.max_text_len),
                         torch.Generator().manual_seed(frames))  # fmt: skip
    seen: list[tuple] = []
    original = attn_mod.attention

    def record(q, k, v, scale, kernel):
        seen.append((q.clone(), k.clone(), v.clone(), q.shape[-1] ** -0.5 if scale is None else scale))
        if len(seen) == 2:
            raise _Captured
        return original(q, k, v, scale, kernel)

    attn_mod.attention = record
    try:
        with torch.inference_mode():
            model(**inputs)
    except _Captured:
        pass
    finally:
        attn_mod.attention = original
    assert len(seen) == 2, "the model has no softmax block with a camera branch"
    return {"model-main": seen[0], "model-cam": seen[1]}


def gaussian(n: int, heads: int, head_dim: int, std: float, device, dtype, seed: int):
    g = torch.Generator(device).manual_seed(seed)

    def one():  # token-major (B, N, H * D), viewed as (B, H, N, D)
        return torch.randn(1, n, heads * head_dim, device=device, generator=g, dtype=torch.float32)

    q, k, v = one() * std, one() * std, one()
    return tuple(t.to(dtype).unflatten(-1, (heads, head_dim)).transpose(1, 2) for t in (q, k, v)) + (head_dim**-0.5,)


def reference_rows(q, k, v, scale, rows) -> torch.Tensor:
    """float32 attention of the query rows `rows` over all keys, head by head."""
    outs = []
    for h in range(q.shape[1]):
        qh, kh, vh = q[:, h, rows].float(), k[:, h].float(), v[:, h].float()
        outs.append(((qh @ kh.transpose(-1, -2)) * scale).softmax(-1) @ vh)
    return torch.stack(outs, dim=1)


def autotuned_configs() -> dict:
    """The autotuner's choice per key (sequence-length bucket, head dim, dtypes), CUDA only."""
    try:
        from sanawm.ops.fp8_attention_kernel import fp8_attention_autotuned
    except Exception:  # no triton
        return {}
    return {str(key): str(cfg) for key, cfg in getattr(fp8_attention_autotuned, "cache", {}).items()}


def errors(out, ref) -> dict:
    a, b = out.double().flatten(), ref.double().flatten()
    return {"rel_l2": ((a - b).norm() / b.norm()).item(), "cos": F.cosine_similarity(a, b, dim=0).item()}


def main() -> None:
    from sanawm.benchmark import merge_records, random_model, time_call
    from sanawm.ops.flash import attention
    from sanawm.ops.flash3 import _flash3_fp8_attention_cpu, flash3_fp8_attention, quantize_per_head
    from sanawm.ops.fp8_attention import emulate, fp8_attention, quantize_qkv

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", nargs="+", type=int, default=[81, 321, 961])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--check-queries", type=int, default=1024)
    parser.add_argument("--no-sweep", action="store_true", help="skip timing each Triton kernel configuration")
    parser.add_argument("--kernels", nargs="+", default=["sdpa-cudnn", "fp8", "flash3-fp8"],
                        choices=["sdpa-cudnn", "fp8", "flash3-fp8", "flash3-bf16"])
    parser.add_argument("--tiny", action="store_true", help="CPU, tiny preset and sizes (the op's emulation)")
    parser.add_argument("--out", default="attention_fp8.json", help="this run's records")
    parser.add_argument("--json", default="benchmarks/hopper.json", help="records merged into this file")
    args = parser.parse_args()
    device = torch.device("cpu" if args.tiny else "cuda")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    heads, head_dim, per_frame = (2, 112, 24) if args.tiny else (HEADS, HEAD_DIM, TOKENS_PER_FRAME)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"

    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = random_model("tiny" if args.tiny else "sanawm-2.6b", device, dtype)
    print(f"model built in {time.perf_counter() - t0:.1f} s", flush=True)

    def sdpa_cudnn(q, k, v, scale):
        if device.type != "cuda":
            return F.scaled_dot_product_attention(q, k, v, scale=scale)
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, scale=scale)

    def flash3_bf16(q, k, v, scale):
        from fa3_fwd_interface import flash_attn_func

        return flash_attn_func(*(t.transpose(1, 2) for t in (q, k, v)), softmax_scale=scale).transpose(1, 2)

    kernels = {"sdpa-cudnn": sdpa_cudnn, "fp8": lambda q, k, v, scale: attention(q, k, v, scale, "fp8"),
               "flash3-fp8": lambda q, k, v, scale: attention(q, k, v, scale, "flash3-fp8"),
               "flash3-bf16": flash3_bf16}  # fmt: skip
    kernels = {name: kernels[name] for name in args.kernels}

    records, table = [], []
    for frames in args.frames:
        n = ((frames - 1) // 8 + 1) * per_frame
        sets = {"gauss": gaussian(n, heads, head_dim, 1.0, device, dtype, frames)}
        sets["sharp"] = gaussian(n, heads, head_dim, 2.0, device, dtype, frames + 1)
        t0 = time.perf_counter()
        sets.update(capture_model_inputs(model, frames, args.tiny, device, dtype))
        print(f"[{frames}] captured the model's q/k/v in {time.perf_counter() - t0:.1f} s", flush=True)
        rows = torch.linspace(0, n - 1, min(args.check_queries, n), device=device).round().long()
        accuracy: dict[str, dict] = {name: {} for name in kernels}
        kernel_vs_emulation: dict[str, dict] = {"fp8": {}, "flash3-fp8": {}}
        with torch.inference_mode():
            for name, (q, k, v, scale) in sets.items():
                ref = reference_rows(q, k, v, scale, rows)
                if name == "gauss":
                    ref_gauss = ref
                for impl, fn in kernels.items():
                    try:
                        accuracy[impl][name] = errors(fn(q, k, v, scale)[:, :, rows], ref)
                    except Exception as exc:  # one kernel failing must not lose the others' numbers
                        print(f"[{frames}] {impl} on {name} FAILED: {type(exc).__name__}: {str(exc)[:400]}", flush=True)
                if name in ("gauss", "model-main") and "fp8" in kernels:
                    q8, k8, vt8, sq, sk, sv = quantize_qkv(q, k, v)
                    em = emulate(q8[:, :, rows], k8, vt8, sq[:, :, rows], sk, sv, scale, torch.float32)
                    try:
                        kern = fp8_attention(q8, k8, vt8, sq, sk, sv, scale, dtype).transpose(1, 2)[:, :, rows]
                        kernel_vs_emulation["fp8"][name] = errors(kern, em)
                    except Exception as exc:
                        print(f"[{frames}] fp8 kernel vs emulation FAILED: {type(exc).__name__}: {exc!s:.300}")
                if name in ("gauss", "model-main") and "flash3-fp8" in kernels:
                    q8, k8, v8, *scales, _ = (t.transpose(1, 2) if t.dim() == 4 else t for t in quantize_per_head(q, k, v))
                    em = _flash3_fp8_attention_cpu(q8[:, rows], k8, v8, *scales, scale, torch.float32)
                    try:
                        kern = flash3_fp8_attention(q8.contiguous(), k8.contiguous(), v8.contiguous(), *scales, scale, dtype)
                        kernel_vs_emulation["flash3-fp8"][name] = errors(kern[:, rows].transpose(1, 2), em.transpose(1, 2))
                    except Exception as exc:
                        print(f"[{frames}] flash3-fp8 kernel vs emulation FAILED: {type(exc).__name__}: {exc!s:.300}")
                del ref
            q, k, v, scale = sets["gauss"]
            flops = 4 * n * n * heads * head_dim
            timed = {impl: (lambda fn=fn: fn(q, k, v, scale)) for impl, fn in kernels.items()}
            quantized = quantize_qkv(q, k, v)
            if "fp8" in kernels:
                timed["fp8 kernel"] = lambda: fp8_attention(*quantized, scale, dtype)
            if "flash3-fp8" in kernels:
                q8, k8, v8, *scales, _ = (t.transpose(1, 2).contiguous() if t.dim() == 4 else t
                                          for t in quantize_per_head(q, k, v))  # fmt: skip
                timed["flash3-fp8 kernel"] = lambda: flash3_fp8_attention(q8, k8, v8, *scales, scale, dtype)
            seconds = {}
            for impl, fn in timed.items():
                try:
                    seconds[impl] = time_call(fn, device, warmup=2, iters=args.iters)
                except Exception as exc:
                    print(f"[{frames}] timing {impl} FAILED: {type(exc).__name__}: {str(exc)[:400]}", flush=True)
            sweep = []
            # (on the CPU only in Triton's interpreter: TRITON_INTERPRET=1, a smoke test)
            can_sweep = device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
            if not args.no_sweep and can_sweep and frames == max(args.frames) and "fp8" in kernels:
                from sanawm.ops.fp8_attention_kernel import CONFIGS, POLY_CONFIGS, launch

                out = torch.empty(1, n, heads, head_dim, device=device, dtype=dtype)
                # Every configuration, and two with Hopper's own (truncating) FP8 accumulation in P . V.
                variants = [(c, True) for c in CONFIGS + POLY_CONFIGS] + [(c, False) for c in CONFIGS[:2]]
                for cfg, precise in variants:
                    label = (f"BLOCK_M={cfg.kwargs['BLOCK_M']} warps={cfg.num_warps} stages={cfg.num_stages} "
                             f"poly={int(cfg.kwargs['POLY'])}" + ("" if precise else " imprecise-PV"))  # fmt: skip
                    run = lambda: launch(*quantized, scale, out, config=cfg, precise_pv=precise)  # noqa: E731
                    try:
                        run()
                        err = errors(out.transpose(1, 2)[:, :, rows], ref_gauss)
                        s = time_call(run, device, warmup=1, iters=3)
                    except Exception as exc:
                        print(f"[sweep] {label}: FAILED {type(exc).__name__}: {str(exc)[:300]}", flush=True)
                        continue
                    print(f"[sweep] {frames} frames {label}: {s * 1e3:.1f} ms ({flops / s / 1e12:.0f} TFLOP/s), "
                          f"gauss rel L2 {err['rel_l2']:.2e}", flush=True)  # fmt: skip
                    sweep.append({"config": label, "s_per_call": s, "tflops": flops / s / 1e12, "gauss": err})
            del quantized, ref_gauss
            if "flash3-fp8" in kernels:
                del q8, k8, v8
        for impl, s in seconds.items():
            acc = accuracy.get(impl, {})
            names = {"fp8 kernel": "fp8-triton-kernel", "fp8": "fp8-triton", "flash3-fp8": "fp8-flash3",
                     "flash3-fp8 kernel": "fp8-flash3-kernel"}  # fmt: skip
            rec = {"impl": names.get(impl, impl),
                   "precision": "bf16" if impl in ("sdpa-cudnn", "flash3-bf16") else "fp8", "mode": "attention", "frames": frames,
                   "tokens": n, "heads": heads, "head_dim": head_dim, "s_per_call": s, "tflops": flops / s / 1e12,
                   "accuracy_vs_f32": acc, "check_queries": len(rows), "gpu": gpu, "torch": torch.__version__}  # fmt: skip
            if impl in kernel_vs_emulation:
                rec["kernel_vs_emulation"] = kernel_vs_emulation[impl]
            if impl == "fp8":
                rec["autotuned"] = autotuned_configs()
                if sweep:
                    rec["configs"] = sweep
            records.append(rec)
            print(f"[{frames}] {impl}: {s * 1e3:.1f} ms, {flops / s / 1e12:.0f} TFLOP/s; "
                  + "; ".join(f"{k} rel L2 {e['rel_l2']:.2e} cos {e['cos']:.5f}" for k, e in acc.items()), flush=True)  # fmt: skip
            table.append((frames, impl, s, flops / s / 1e12, acc))
        for impl, by_input in kernel_vs_emulation.items():
            if by_input:
                print(f"[{frames}] {impl} kernel vs its float32 emulation: "
                      + "; ".join(f"{k} rel L2 {e['rel_l2']:.2e}" for k, e in by_input.items()), flush=True)  # fmt: skip
        del sets
        if device.type == "cuda":
            print(f"[{frames}] peak {torch.cuda.max_memory_allocated() / 1e9:.1f} GB", flush=True)
            torch.cuda.empty_cache()

    if "fp8" in kernels:
        print(f"autotuned: {autotuned_configs()}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(records, indent=1) + "\n")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(merge_records(Path(args.json), records), indent=1) + "\n")
    names = ["gauss", "sharp", "model-main", "model-cam"]
    print(f"\n{'frames':>6} {'kernel':>17} {'ms':>8} {'TFLOP/s':>8}  " + "  ".join(f"{k + ' L2/cos':>20}" for k in names))
    for frames, impl, s, tf, acc in table:
        cells = [f"{acc[k]['rel_l2']:.2e}/{acc[k]['cos']:.5f}" if k in acc else "-" for k in names]
        print(f"{frames:>6} {impl:>17} {s * 1e3:>8.1f} {tf:>8.0f}  " + "  ".join(f"{c:>20}" for c in cells))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
