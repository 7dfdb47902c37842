"""Where one forward of the stage-1 DiT spends its GPU time: kernel time by kind, top kernels.

    python scripts/profile_dit.py                       # 2.6B preset, bf16, 121x22x40, eager, fused GDN
    python scripts/profile_dit.py --gdn-backend torch   # the same with the PyTorch GDN path
    python scripts/profile_dit.py --compile --frames 961 321 --variants bf16 fp8 --json profile.json
    python scripts/profile_dit.py --tiny --device cpu   # smoke test (CPU ops instead of kernels)

Random weights and inputs as in scripts/bench_hopper.py (704x1280 video for `--frames`); per
variant and clip: one first call (it compiles with `--compile`), one timed call (CUDA events),
then one profiled call (torch.profiler, CUDA activity only). Variants run in order in one
process: "bf16" is the model as built (plus compile), "fp8" converts its block matmuls with
`sanawm.ops.fp8.convert_to_fp8` in place (so it must come last) and compiles again.

Kernels are sorted into kinds by name (`kernel_kind`): softmax/cross attention, GEMMs (cuBLAS,
CUTLASS, FP8 `_scaled_mm`), cuDNN convolutions (the FFN's 1x1 / depthwise / temporal convs
when they run as convs), the GDN Triton kernels, FP8 activation quantisation (fused kernels
that take a row amax), layout copies (cat / pad / clone / transposes, aten or Triton),
other Triton-fused element-wise work, aten element-wise / reduction kernels, the rest.
Prints one table per variant and clip (kinds, then the top `--rows` kernels) and writes
them to `--json`.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from sanawm.benchmark import latents_for_frames, make_inputs, parse_inductor_options, parse_latent_size, random_model
from sanawm.ops.flash import ATTENTION_KERNELS, use_attention_kernel

KINDS = (
    "attention",
    "gemm",
    "conv (cuDNN)",
    "GDN kernels",
    "fp8 quantisation",
    "layout copies",
    "triton fused element-wise",
    "aten element-wise / reductions",
    "other",
)

_TRITON_RULES = (  # inductor's kernels are named after the aten ops they fuse
    ("fp8 quantisation", r"amax"),
    ("layout copies", r"^triton_[a-z]+_fused_(?:(?:cat|clone|constant_pad_nd|copy|permute|view|unsqueeze|"
                      r"transpose|_unsafe_view|slice|expand|\d+)_?)+$"),  # fmt: skip
    ("triton fused element-wise", r""),
)
_RULES = (  # every other kernel; first match wins, names lower-cased
    ("attention", r"sdpa|fmha|flash|attention|attn"),
    ("GDN kernels", r"_transition_kernel|_scan_kernel|_readout_kernel"),
    ("layout copies", r"nchwtonhwc|nhwctonchw|catarraybatchedcopy|direct_copy|copy_kernel|transpose|memcpy"),
    ("conv (cuDNN)", r"fprop|conv2d|convolution|depthwise|implicit_gemm|dgrad|wgrad"),
    ("gemm", r"nvjet|gemm|cutlass|cublas|xmma|_mm_"),
    ("aten element-wise / reductions", r"elementwise|reduce_kernel|vectorized|unrolled|norm|softmax|"
                                       r"cunn|index|fill|scatter|gather"),  # fmt: skip
)


def kernel_kind(name: str) -> str:
    """The kind (one of KINDS) of a CUDA kernel, from its name."""
    low = name.lower()
    for kind, pattern in _TRITON_RULES if low.startswith("triton_") else _RULES:
        if re.search(pattern, low):
            return kind
    return "other"


def summarize(events, rows: int) -> dict:
    """Kernel time by kind and the top kernels of a profiler's key_averages (device events)."""
    kernels = [(e.key, e.count, e.self_device_time_total / 1e3) for e in events if e.self_device_time_total > 0]
    total = sum(ms for _, _, ms in kernels)
    by_kind = {kind: {"ms": 0.0, "launches": 0} for kind in KINDS}
    for name, count, ms in kernels:
        entry = by_kind[kernel_kind(name)]
        entry["ms"] += ms
        entry["launches"] += count
    top = sorted(kernels, key=lambda k: -k[2])[:rows]
    return {
        "kernel_ms": total,
        "by_kind": {k: v for k, v in by_kind.items() if v["launches"]},
        "top": [{"name": n, "kind": kernel_kind(n), "calls": c, "ms": ms} for n, c, ms in top],
    }


def format_summary(title: str, summary: dict) -> str:
    total = summary["kernel_ms"]
    lines = [title, f"{'kind':32s} {'ms':>9s} {'share':>6s} {'launches':>8s}"]
    for kind, v in sorted(summary["by_kind"].items(), key=lambda kv: -kv[1]["ms"]):
        lines.append(f"{kind:32s} {v['ms']:9.1f} {100 * v['ms'] / total:5.1f}% {v['launches']:8d}")
    lines.append(f"{'all kernels':32s} {total:9.1f}")
    lines.append(f"{'ms':>9s} {'calls':>6s} {'kind':>22s}  kernel")
    for k in summary["top"]:
        lines.append(f"{k['ms']:9.2f} {k['calls']:6d} {k['kind'][:22]:>22s}  {k['name'][:150]}")
    return "\n".join(lines)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_call(fn, device: torch.device, rows: int) -> dict:
    """First call (wall s), one timed call, one profiled call; the summary of the last."""
    cuda = device.type == "cuda"
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    first = time.perf_counter() - t0
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        sync(device)
        seconds = start.elapsed_time(end) / 1e3
    else:
        t0 = time.perf_counter()
        fn()
        seconds = time.perf_counter() - t0
    activities = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    if cuda:
        events = prof.key_averages()
        summary = summarize(events, rows)
    else:  # CPU smoke test: operator time stands in for kernel time
        events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
        summary = summarize_cpu(events, rows)
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if cuda else None
    return {"first_call_s": first, "s_per_forward": seconds, "peak_gb": peak, **summary}


def summarize_cpu(events, rows: int) -> dict:
    class _E:  # the CPU ops' self time in the field `summarize` reads
        def __init__(self, e):
            self.key, self.count, self.self_device_time_total = e.key, e.count, e.self_cpu_time_total

    return summarize([_E(e) for e in events], rows)


def primitives(device: torch.device, frames: int, rows: int) -> list[str]:
    """Candidate replacements for the FFN's convs and the FP8 activation path, timed alone
    (eager, CUDA events, median of 5) at the 2.6B shapes of a `frames`-frame clip."""
    import torch.nn.functional as F

    from sanawm.benchmark import time_call
    from sanawm.model.config import SanaWMConfig
    from sanawm.model.layers import GLUFeedForward
    from sanawm.ops.fp8 import quantize_rows

    cfg = SanaWMConfig()
    T, H, W = latents_for_frames(frames, 704, 1280)
    C, S = cfg.hidden_size, H * W
    g = torch.Generator(device=device).manual_seed(0)
    mlp = GLUFeedForward(C, cfg.ffn_hidden, 3, device=device).to(torch.bfloat16)
    torch.nn.init.normal_(mlp.t_conv.weight, std=0.01)
    x = torch.randn(1, T, S, C, device=device, dtype=torch.bfloat16, generator=g)
    y_tok = torch.randn(1, T, S, C, device=device, dtype=torch.bfloat16, generator=g)
    y_cf = y_tok.permute(0, 3, 1, 2)  # (B, C, T, S) view of the token layout (channels-last)
    y_cont = y_cf.contiguous()  # what the conv path hands over today
    w_t = mlp.t_conv.weight
    w_cat = torch.cat([w_t[:, :, i, 0] for i in range(3)], dim=0)  # (3C, C)
    qkv_w = torch.randn(3 * C, C, device=device, dtype=torch.bfloat16, generator=g) / C**0.5
    x2 = x.reshape(-1, C)
    qx, sx = quantize_rows(x2)
    qw, sw = quantize_rows(qkv_w)
    q_compiled = torch.compile(quantize_rows)

    from sanawm.ops.depthwise_glu import depthwise_glu_op, silu_depthwise_glu_reference

    slice_frames = min(T, 90)  # the FFN's frame slice at 961 frames (2^30 elements of 2F channels)
    pre = torch.randn(slice_frames, H, W, 2 * cfg.ffn_hidden, device=device, dtype=torch.bfloat16, generator=g)
    dw = mlp.depth_conv.conv

    def gemm_taps():
        z = torch.mm(y_tok.reshape(-1, C), w_cat.t()).view(1, T, S, 3, C)
        out = z[:, :, :, 1].clone()
        out[:, 1:] += z[:, :-1, :, 0]
        out[:, :-1] += z[:, 1:, :, 2]
        return out

    cases = [
        ("ffn spatial, conv path (today on CUDA)", lambda: mlp.spatial(x, H, W)),
        ("ffn spatial, token path (_spatial_tokens)", lambda: mlp._spatial_tokens(x, H, W)),
        (f"SiLU + 3x3 depthwise + GLU over {slice_frames} frames, reference (3 kernels)",
         lambda: silu_depthwise_glu_reference(pre, dw.weight, dw.bias)),
        (f"SiLU + 3x3 depthwise + GLU over {slice_frames} frames, fused Triton kernel",
         lambda: depthwise_glu_op(F.silu(pre), dw.weight, dw.bias)),
        ("ffn 1x1 conv C->2F on channels-last frames", lambda: mlp.inverted_conv.conv(
            x.reshape(T, H, W, C).permute(0, 3, 1, 2))),
        ("ffn linear C->2F (same math, cuBLAS)", lambda: F.linear(
            x, mlp.inverted_conv.conv.weight.flatten(1), mlp.inverted_conv.conv.bias)),
        ("temporal conv, contiguous (B,C,T,S), by chunk", lambda: mlp.temporal(y_cont, None, None)),
        ("temporal conv, channels-last view, by chunk", lambda: mlp.temporal(y_cf, None, None)),
        ("temporal conv2d padding=(1,0), channels-last", lambda: F.conv2d(y_cf, w_t, padding=(1, 0))),
        ("temporal conv2d padding=(1,0), contiguous", lambda: F.conv2d(y_cont, w_t, padding=(1, 0))),
        ("temporal as GEMM N x C x 3C + shifted adds", gemm_taps),
        ("temporal GEMM N x C x 3C alone", lambda: torch.mm(y_tok.reshape(-1, C), w_cat.t())),
        ("temporal GEMM N x C x 3C, float32 out", lambda: torch.mm(y_tok.reshape(-1, C), w_cat.t(),
                                                                   out_dtype=torch.float32)),
        ("bf16 linear N x C -> 3C", lambda: F.linear(x2, qkv_w)),
        ("fp8 quantize_rows N x C, eager", lambda: quantize_rows(x2)),
        ("fp8 quantize_rows N x C, compiled alone", lambda: q_compiled(x2)),
        ("fp8 _scaled_mm N x C -> 3C, row scales", lambda: torch._scaled_mm(
            qx, qw.t(), scale_a=sx, scale_b=sw.t(), out_dtype=torch.bfloat16)),
        ("fp8 _scaled_mm N x C -> 3C, tensor scales", lambda: torch._scaled_mm(
            qx, qw.t(), scale_a=sx.amax(), scale_b=sw.amax(), out_dtype=torch.bfloat16)),
    ]  # fmt: skip
    lines = [f"=== primitives at {frames} frames ({T}x{H}x{W}, N = {T * S} tokens), bf16, eager ==="]
    with torch.inference_mode():
        for name, fn in cases:
            try:
                ms = 1e3 * time_call(fn, device, 2, 5)
                lines.append(f"{ms:9.3f} ms  {name}")
            except Exception as err:  # a candidate that cannot run here is reported, not fatal
                lines.append(f"   failed     {name}: {type(err).__name__}: {str(err)[:150]}")
            print(lines[-1], flush=True)
        for name, fn in cases[:2] + cases[4:6]:  # the kernels behind the composite candidates
            fn()
            sync(device)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn()
                sync(device)
            lines.append(format_summary(f"--- kernels of: {name} ---", summarize(prof.key_averages(), rows)))
            print(lines[-1], flush=True)
    return lines


def velocity_check(model, frames: int, path: Path, device, dtype, text_len: int) -> None:
    """One eager forward at `frames` (704x1280); its velocity is saved to `path`, or compared
    with the one saved there (relative L2, cosine), e.g. by a run of the previous code."""
    size = latents_for_frames(frames, 704, 1280) if device.type == "cuda" else (3, 4, 6)
    inputs = make_inputs(model, size, device, dtype, text_len, torch.Generator().manual_seed(4321))
    with torch.inference_mode():
        v = model(**inputs).float().cpu()
    if path.exists():
        ref = torch.load(path).double()
        rel = ((v.double() - ref).norm() / ref.norm()).item()
        cos = torch.nn.functional.cosine_similarity(v.double().flatten(), ref.flatten(), dim=0).item()
        print(f"velocity at {frames} frames vs {path}: rel L2 {rel:.3e}, cosine {cos:.6f}", flush=True)
    else:
        torch.save(v, path)
        print(f"velocity at {frames} frames saved to {path}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_latent_size, nargs="+", default=None, help="latent sizes TxHxW")
    parser.add_argument("--frames", type=int, nargs="+", default=None, help="video frame counts (704x1280)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--gdn-backend", default="auto", choices=["auto", "torch", "triton"])
    parser.add_argument("--gdn-precision", default=None, choices=["ieee", "tf32"],
                        help="the fused GDN kernels' precision (default: the model's, auto = tf32 for bf16)")
    parser.add_argument("--compile", action="store_true", help="regional torch.compile (compile_blocks)")
    parser.add_argument("--inductor", action="append", default=[], metavar="KEY=VALUE",
                        help="inductor option for --compile (repeatable), e.g. coordinate_descent_tuning=1")
    parser.add_argument("--variants", nargs="+", default=["bf16"], choices=["bf16", "fp8"])
    parser.add_argument("--attention", default="sdpa", choices=ATTENTION_KERNELS,
                        help="softmax-attention kernel (flash4 needs FlashAttention-4 installed)")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--json", default=None, help="write the summaries here")
    parser.add_argument("--velocity-check", nargs=2, default=None, metavar=("FRAMES", "FILE"),
                        help="first one eager forward at FRAMES: save the velocity to FILE, or, if FILE "
                             "exists (another code version's run), print its distance to it")
    parser.add_argument("--primitives", type=int, default=None, metavar="FRAMES",
                        help="then time candidate FFN-conv / FP8 primitives alone at this clip length (CUDA)")
    args = parser.parse_args()
    if "fp8" in args.variants and args.variants[-1] != "fp8":
        parser.error("fp8 converts the model in place: list it last")
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    dtype = torch.float32 if args.tiny else torch.bfloat16
    preset = "tiny" if args.tiny else "sanawm-2.6b"
    if args.size:
        sizes = args.size
    elif args.frames:
        sizes = [latents_for_frames(f, 704, 1280) for f in args.frames]
        sizes = [(t, 4, 6) for t, _, _ in sizes] if args.tiny else sizes
    else:
        sizes = [(3, 4, 6) if args.tiny else (121, 22, 40)]

    from sanawm.model.compile import compile_blocks
    from sanawm.ops.fp8 import convert_to_fp8
    from sanawm.ops.gdn import use_gdn_precision


    # Two block kinds per clip size (static shapes): keep every size compiled.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 2 * len(sizes))
    torch.manual_seed(0)
    model = random_model(preset, device, dtype)
    for block in model.blocks:
        block.attn.backend = args.gdn_backend
    if args.gdn_precision:
        use_gdn_precision(model, args.gdn_precision)
    options = parse_inductor_options(args.inductor)
    use_attention_kernel(model, args.attention)
    text_len = min(300, model.config.max_text_len)
    if args.velocity_check:
        velocity_check(model, int(args.velocity_check[0]), Path(args.velocity_check[1]), device, dtype, text_len)
    results = []
    for variant in args.variants:
        if variant == "fp8":
            convert_to_fp8(model)
            torch._dynamo.reset()  # the bf16 graphs are not needed again
        if args.compile:
            compile_blocks(model, backend="aot_eager" if device.type == "cpu" else "inductor",
                           options=None if device.type == "cpu" else options)  # fmt: skip
        for size in sizes:
            inputs = make_inputs(model, size, device, dtype, text_len, torch.Generator().manual_seed(size[0]))
            with torch.inference_mode():
                res = profile_call(lambda: model(**inputs), device, args.rows)
            res.update(variant=variant, compiled=args.compile, attention=args.attention, latents="x".join(map(str, size)),
                       gdn_backend=args.gdn_backend, preset=preset, inductor_options=options,
                       gdn_precision=args.gdn_precision or model.config.gdn_precision,
                       gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")  # fmt: skip
            results.append(res)
            title = (f"=== {preset} {res['latents']} {variant}{' compiled' if args.compile else ''}: "
                     f"{res['s_per_forward']:.3f} s/forward (first call {res['first_call_s']:.1f} s), "
                     f"{res['kernel_ms']:.0f} ms of kernels, peak {res['peak_gb'] or 0:.1f} GB ===")  # fmt: skip
            print(format_summary(title, res), flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
            del inputs
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if args.primitives:
        del model
        try:
            primitives(device, args.primitives, 8)
        except Exception as err:  # after the profiles: a failure here must not lose them
            print(f"primitives failed: {type(err).__name__}: {err}", flush=True)


if __name__ == "__main__":
    main()
