"""SANA-WM stage-1 forward on one GPU: sanawm (eager, compiled, FP8) vs diffusers 0.42.1.

    python scripts/bench_hopper.py                       # 2.6B preset, 81/321/961 frames, CUDA
    python scripts/bench_hopper.py --impls sanawm-eager sanawm-compile --frames 81
    python scripts/bench_hopper.py --tiny                # tiny preset on the CPU (smoke test)

Each implementation runs in its own subprocess (`--worker NAME`), one after the other on the
same GPU, so one cannot warm or fragment the memory of another. Every run: random weights
(sanawm's from-scratch init; diffusers' own init), B=1, 704x1280 video (22x40 latents),
300 text tokens, a moving camera (raymap + chunk-Plücker rays), bf16, one forward, no CFG.
Time: median of `--iters` calls after the first call (reported apart as `first_call_s`: it
holds torch.compile's compile time) and `--warmup` more (default none); CUDA events. Peak memory:
`torch.cuda.max_memory_allocated` over the timed calls, weights included.

Implementations:
- sanawm-eager: the reference path (`SanaWMTransformer` as it is);
- sanawm-compile: `sanawm.model.compile.compile_blocks` (regional torch.compile);
- sanawm-fp8: `sanawm.ops.fp8.convert_to_fp8` (FP8 linears, per-row scales) + compile;
  it also measures its accuracy at `--accuracy-frames` (81): relative L2 and cosine of the
  velocity vs the eager bf16 model and vs float32, next to bf16's own error vs float32 (with
  the weights that the from-scratch init zeroes given random values first, so that the temporal
  conv and the camera branch count: `sanawm.benchmark.open_every_branch`); `--fp8-families`
  picks the matmul families in FP8 (convert_to_fp8's default; other sets get their own records,
  impl suffix -fp8all / -fp8custom);
- sanawm-flash4 / sanawm-fp8-flash4: sanawm-compile / sanawm-fp8 with the softmax blocks'
  attention on FlashAttention-4 (`sanawm.ops.flash`, head dim 112 unpadded; needs the
  flash-attn-4 package and an sm90 GPU; on --tiny the op's CPU implementation);
  sanawm-flash4 also measures its velocity vs the eager SDPA model at `--accuracy-frames`;
- sanawm-fp8attn: sanawm-fp8 with the softmax blocks' attention in FP8 too (`sanawm.ops.flash`
  kernel "fp8": the Triton kernel of `sanawm.ops.fp8_attention`; on --tiny its float32
  emulation); measures its accuracy like sanawm-fp8, plus the eager bf16 model with only the
  attention in FP8;
- sanawm-fp8-flash3: sanawm-fp8 with the softmax blocks' attention in FP8 on FlashAttention-3
  (kernel "flash3-fp8", `sanawm.ops.flash3`; needs the fa3-fwd package and an sm90 GPU; on
  --tiny its float32 emulation); accuracy as sanawm-fp8attn;
- diffusers: diffusers' `SanaWMTransformer3DModel` with its default (2.6B release) config
  (needs diffusers 0.42.1 importable).

`--gdn-precision ieee|tf32` sets the GDN blocks' kernel precision (`SanaWMConfig.gdn_precision`,
default the model's "auto": tf32 for bf16) and `--inductor KEY=VALUE` (repeatable) passes
inductor options to the compiled implementations (e.g. coordinate_descent_tuning=true, what
`--compile tuned` sets); the records keep both, and the impl of a run with inductor options
gets a suffix: "-tuned" for coordinate_descent_tuning=true alone, else the options (e.g.
"-multi_kernel=1" for triton.multi_kernel=1).

`--temporal-conv cudnn` runs the sanawm implementations with the FFN's temporal conv + residual
on the reference conv path (cuDNN) instead of the GEMM op (`sanawm.ops.frame_conv_gemm`), to
measure the op side by side (patched in the worker process only; the records say which).

Writes a JSON list of records {"impl", "precision", "mode", "frames", "s_per_forward",
"peak_gb", "gpu", ...} (`--json`, default benchmarks/hopper.json; records already there with
another (impl, precision, mode, frames) are kept) and prints a table of ratios last.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

IMPLS = ("sanawm-eager", "diffusers", "sanawm-compile", "sanawm-fp8", "sanawm-flash4", "sanawm-fp8-flash4",
         "sanawm-fp8attn", "sanawm-fp8-flash3")  # fmt: skip
PRECISION = {"sanawm-eager": "bf16", "diffusers": "bf16", "sanawm-compile": "bf16", "sanawm-fp8": "fp8",
             "sanawm-flash4": "bf16", "sanawm-fp8-flash4": "fp8", "sanawm-fp8attn": "fp8",
             "sanawm-fp8-flash3": "fp8"}  # fmt: skip
# The softmax attention kernel (`sanawm.ops.flash`) of the implementations that change it.
ATTENTION = {"sanawm-flash4": "flash4", "sanawm-fp8-flash4": "flash4", "sanawm-fp8attn": "fp8",
             "sanawm-fp8-flash3": "flash3-fp8"}  # fmt: skip
HEIGHT, WIDTH = 704, 1280


def latent_size(frames: int, tiny: bool) -> tuple[int, int, int]:
    t = (frames - 1) // 8 + 1
    return (t, 4, 6) if tiny else (t, HEIGHT // 32, WIDTH // 32)


def gpu_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_runs(fn, device: torch.device, warmup: int, iters: int) -> dict:
    """First call (wall clock, synced), then median of `iters` after `warmup` more calls."""
    from sanawm.benchmark import peak_memory_gb, reset_peak_memory, time_call

    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    first = time.perf_counter() - t0
    reset_peak_memory(device)
    seconds = time_call(fn, device, warmup, iters)
    return {"first_call_s": first, "s_per_forward": seconds, "peak_gb": peak_memory_gb(device)}


# ----------------------------------------------------------------------------------------
# Workers (one process each)
# ----------------------------------------------------------------------------------------


def sanawm_worker(impl: str, args, device: torch.device, dtype: torch.dtype) -> list[dict]:
    from sanawm.benchmark import cosine, make_inputs, random_model, rel_l2
    from sanawm.model.compile import compile_blocks
    from sanawm.ops.flash import use_attention_kernel
    from sanawm.ops.fp8 import convert_to_fp8
    from sanawm.ops.gdn import use_gdn_precision

    if args.temporal_conv == "cudnn":  # this worker process only: the reference conv path everywhere
        from sanawm.ops import frame_conv_gemm

        frame_conv_gemm.gemm_applies = lambda y, weight: False
    preset = "tiny" if args.tiny else "sanawm-2.6b"
    torch.manual_seed(0)
    model = random_model(preset, device, dtype)
    if args.gdn_precision:
        use_gdn_precision(model, args.gdn_precision)
    text_len = min(args.text_len, model.config.max_text_len)
    extra: dict = {}
    if PRECISION[impl] == "fp8":
        accuracy = impl != "sanawm-fp8-flash4" and not args.skip_accuracy
        extra = fp8_accuracy(model, preset, args, device, dtype, text_len, ATTENTION.get(impl, "sdpa")) if accuracy else {}
        extra["fp8_modules"] = convert_to_fp8(model, args.fp8_families)
        extra["fp8_families"] = "+".join(args.fp8_families)
    check = None
    if impl in ("sanawm-compile", "sanawm-flash4") and not args.skip_accuracy:  # vs eager, after timing
        check = make_inputs(model, latent_size(args.accuracy_frames, args.tiny), device, dtype, text_len,
                            torch.Generator().manual_seed(1234))  # fmt: skip
        with torch.inference_mode():
            v_eager = model(**check).float()
    if impl in ATTENTION:
        use_attention_kernel(model, ATTENTION[impl])
    options = inductor_options(args)
    if impl != "sanawm-eager":
        compile_blocks(model, backend="aot_eager" if args.tiny else "inductor", mode=args.compile_mode,
                       options=options)  # fmt: skip
    records = []
    for frames in args.frames:
        size = latent_size(frames, args.tiny)
        inputs = make_inputs(model, size, device, dtype, text_len, torch.Generator().manual_seed(frames))
        with torch.inference_mode():
            rec = timed_runs(lambda: model(**inputs), device, args.warmup, args.iters)
        rec.update(latents="x".join(map(str, size)), temporal_conv=args.temporal_conv,
                   **(extra if frames == args.frames[0] else {}))  # fmt: skip
        if args.compile_mode and impl != "sanawm-eager":
            rec["compile_mode"] = args.compile_mode
        if args.inductor and impl != "sanawm-eager":
            rec["inductor_options"] = options
        rec["gdn_precision"] = args.gdn_precision or model.config.gdn_precision
        print(f"[{impl}] {frames} frames: {rec['s_per_forward']:.3f} s, first call {rec['first_call_s']:.1f} s",
              flush=True)  # fmt: skip
        suffix = inductor_suffix(options) + (args.fp8_suffix if PRECISION[impl] == "fp8" else "")
        records.append(record(impl, frames, rec, device, suffix=suffix))
        save(args, records)
        del inputs
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if check is not None:
        with torch.inference_mode():
            v_compiled = model(**check).float()
        records[0].update(compiled_vs_eager_rel_l2=rel_l2(v_compiled, v_eager), compiled_vs_eager_cos=cosine(
            v_compiled, v_eager))  # fmt: skip
        save(args, records)
    return records


def fp8_families(text: str) -> tuple[tuple[str, ...], str]:
    """--fp8-families as names of `FP8_FAMILIES`, and the suffix of the FP8 records' impl name
    ("" for convert_to_fp8's default set, so that runs of other sets keep their own records)."""
    from sanawm.ops.fp8 import DEFAULT_FP8_FAMILIES, FP8_FAMILIES, check_fp8_families

    families = {"default": DEFAULT_FP8_FAMILIES, "all": tuple(FP8_FAMILIES)}.get(text) or tuple(text.split("+"))
    check_fp8_families(families)
    if set(families) == set(DEFAULT_FP8_FAMILIES):
        return families, ""
    return families, "-fp8all" if set(families) == set(FP8_FAMILIES) else "-fp8custom"


def inductor_options(args) -> dict | None:
    """--inductor KEY=VALUE pairs as torch.compile options (none on --tiny: aot_eager takes none)."""
    from sanawm.benchmark import parse_inductor_options

    return None if args.tiny else parse_inductor_options(args.inductor)


def inductor_suffix(options: dict | None) -> str:
    """The impl-name suffix of a run with inductor options: "-tuned" for `--compile tuned`'s
    options, else the options themselves (their last dotted part), so that runs of different
    options keep their own records in hopper.json."""
    from sanawm.model.compile import TUNED_OPTIONS

    if not options:
        return ""
    if options == TUNED_OPTIONS:
        return "-tuned"
    text = lambda v: str(v).lower() if isinstance(v, bool) else str(v)  # noqa: E731
    return "-" + "+".join(f"{key.rsplit('.', 1)[-1]}={text(value)}" for key, value in options.items())


def fp8_accuracy(model, preset: str, args, device, dtype, text_len: int, attention: str = "sdpa") -> dict:
    """Velocity errors at `--accuracy-frames`, with every branch open (`open_every_branch`, on
    `model` too): FP8 (compiled; softmax attention with kernel
    `attention`) vs bf16 eager and vs float32; bf16 eager vs float32 for scale; the CUDA FP8
    matmul vs its float32 emulation; with attention "fp8" also the eager bf16 model with only
    its attention in FP8."""
    from sanawm.benchmark import cosine, make_inputs, open_every_branch, random_model, rel_l2
    from sanawm.model.compile import compile_blocks
    from sanawm.ops.flash import use_attention_kernel
    from sanawm.ops.fp8 import convert_to_fp8, fp8_matmul, quantize_rows, scaled_mm_emulated

    size = latent_size(args.accuracy_frames, args.tiny)
    inputs = make_inputs(model, size, device, dtype, text_len, torch.Generator().manual_seed(1234))
    with torch.inference_mode():
        open_every_branch(model)
        v_bf16 = model(**inputs).float()
        torch.manual_seed(0)
        ref32 = open_every_branch(random_model(preset, device, torch.float32))  # the weights bf16 rounds
        v_f32 = ref32(**{k: (v.float() if v.is_floating_point() else v) for k, v in inputs.items()})
        del ref32
        attn_only = {}
        if attention != "sdpa":
            v_attn = use_attention_kernel(copy.deepcopy(model), attention)(**inputs).float()
            attn_only = {"attn_only_vs_bf16_rel_l2": rel_l2(v_attn, v_bf16), "attn_only_vs_bf16_cos": cosine(v_attn, v_bf16)}
            del v_attn
        fp8 = copy.deepcopy(model)
        convert_to_fp8(fp8, args.fp8_families)
        use_attention_kernel(fp8, attention)
        compile_blocks(fp8, backend="aot_eager" if args.tiny else "inductor", options=inductor_options(args))
        v_fp8 = fp8(**inputs).float()
        del fp8
        g = torch.Generator().manual_seed(5)
        x = torch.randn(4096, 2240, generator=g).to(device, dtype)
        w = torch.randn(6720, 2240, generator=g).to(device, dtype) / 2240**0.5
        b = torch.randn(6720, generator=g).to(device, dtype)
        qw, sw = quantize_rows(w)
        qx, sx = quantize_rows(x)
        # With a bias: _scaled_mm adds it in the epilogue (the model's FP8 linears pass theirs).
        mm_err = rel_l2(fp8_matmul(x, qw, sw, b), scaled_mm_emulated(qx, qw, sx, sw, torch.float32) + b.float())
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "accuracy_frames": args.accuracy_frames,
        "fp8_vs_bf16_rel_l2": rel_l2(v_fp8, v_bf16), "fp8_vs_bf16_cos": cosine(v_fp8, v_bf16),
        "fp8_vs_f32_rel_l2": rel_l2(v_fp8, v_f32), "fp8_vs_f32_cos": cosine(v_fp8, v_f32),
        "bf16_vs_f32_rel_l2": rel_l2(v_bf16, v_f32), "bf16_vs_f32_cos": cosine(v_bf16, v_f32),
        "fp8_matmul_vs_emulation_rel_l2": mm_err, "attention": attention, "weights": "every branch open",
        **attn_only,
    }  # fmt: skip


def diffusers_worker(args, device: torch.device, dtype: torch.dtype) -> list[dict]:
    import diffusers
    from diffusers import SanaWMTransformer3DModel

    from sanawm.benchmark import camera_inputs

    torch.manual_seed(0)
    config = (
        dict(num_layers=4, hidden_size=224, num_attention_heads=2, caption_channels=64, in_channels=16)
        if args.tiny
        else {}
    )
    with torch.device(device):
        model = SanaWMTransformer3DModel(**config)
    model = model.to(dtype).eval()
    in_ch, cap = model.config.in_channels, model.config.caption_channels
    text_len = 12 if args.tiny else args.text_len
    records = []
    for frames in args.frames:
        size = latent_size(frames, args.tiny)
        T, H, W = size
        g = torch.Generator().manual_seed(frames)
        timestep = 1000 * torch.rand(1, 1, T, generator=g)
        timestep[..., 0] = 0
        raymap, plucker = camera_inputs(1, T, H, W, device, dtype, g)
        inputs = dict(
            hidden_states=torch.randn(1, in_ch, T, H, W, generator=g).to(device, dtype),
            timestep=timestep.to(device),
            encoder_hidden_states=torch.randn(1, 1, text_len, cap, generator=g).to(device, dtype),
            encoder_attention_mask=torch.ones(1, text_len, dtype=torch.int64, device=device),
            camera_conditions=raymap.to(dtype),  # as SanaWMPipeline passes it (model dtype)
            chunk_plucker=plucker,
            return_dict=False,
        )
        with torch.inference_mode():
            rec = timed_runs(lambda: model(**inputs), device, args.warmup, args.iters)
        rec.update(latents="x".join(map(str, size)), diffusers_version=diffusers.__version__)
        print(f"[diffusers] {frames} frames: {rec['s_per_forward']:.3f} s", flush=True)
        records.append(record("diffusers", frames, rec, device))
        save(args, records)
        del inputs
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return records


def save(args, records: list[dict]) -> None:
    """Write the worker's records so far (the driver keeps them if a later size fails)."""
    Path(args.worker_json).write_text(json.dumps(records))


def precision_of(impl: str, device: torch.device) -> str:
    """The record's precision: --tiny runs on the CPU in float32 (FP8 modules emulated)."""
    return PRECISION[impl] if device.type == "cuda" or PRECISION[impl] == "fp8" else "fp32"


def record(impl: str, frames: int, rec: dict, device: torch.device, suffix: str = "") -> dict:
    return {
        "impl": impl + suffix, "precision": precision_of(impl, device), "mode": "forward", "frames": frames,
        "s_per_forward": rec.pop("s_per_forward"), "peak_gb": rec.pop("peak_gb"), "gpu": gpu_name(device),
        "torch": torch.__version__, **rec,
    }  # fmt: skip


# ----------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------


def run_worker(impl: str, args, timeout: float) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "records.json"
        cmd = [sys.executable, __file__, "--worker", impl, "--worker-json", str(out),
               "--frames", *map(str, args.frames), "--warmup", str(args.warmup), "--iters", str(args.iters),
               "--text-len", str(args.text_len), "--accuracy-frames", str(args.accuracy_frames)]  # fmt: skip
        cmd += ["--tiny"] if args.tiny else []
        cmd += ["--skip-accuracy"] if args.skip_accuracy else []
        cmd += ["--compile-mode", args.compile_mode] if args.compile_mode else []
        cmd += ["--temporal-conv", args.temporal_conv]
        cmd += ["--gdn-precision", args.gdn_precision] if args.gdn_precision else []
        cmd += [f"--inductor={item}" for item in args.inductor]
        cmd += ["--fp8-families", "+".join(args.fp8_families)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, timeout=timeout, check=False)
            ok = proc.returncode == 0 and out.exists()
            reason = f"exit code {proc.returncode}"
        except subprocess.TimeoutExpired:
            ok, reason = False, f"timed out after {timeout:.0f} s"
        print(f"[{impl}] process took {time.perf_counter() - t0:.0f} s", flush=True)
        if not ok:
            print(f"[{impl}] FAILED: {reason} (keeping the sizes it finished)", flush=True)
        return json.loads(out.read_text()) if out.exists() else []


def ratio_table(records: list[dict], frames: list[int]) -> str:
    by = {(r["impl"], r["frames"]): r for r in records}
    lines = [f"{'impl':>15} {'prec':>5} {'frames':>6} {'s/fwd':>8} {'peak GB':>8} {'1st call s':>10} "
             f"{'vs diffusers':>12} {'vs eager':>9}"]  # fmt: skip
    for impl in dict.fromkeys(r["impl"] for r in records):  # in the order they ran
        for f in frames:
            r = by.get((impl, f))
            if r is None:
                continue
            s = r["s_per_forward"]
            d, e = by.get(("diffusers", f)), by.get(("sanawm-eager", f))
            vs_d = f"{d['s_per_forward'] / s:.2f}x" if d else "-"
            vs_e = f"{e['s_per_forward'] / s:.2f}x" if e else "-"
            peak = "n/a" if r["peak_gb"] is None else f"{r['peak_gb']:.1f}"
            lines.append(f"{impl:>15} {r['precision']:>5} {f:>6} {s:>8.3f} {peak:>8} {r['first_call_s']:>10.1f} "
                         f"{vs_d:>12} {vs_e:>9}")  # fmt: skip
    acc = [r for r in records if "fp8_vs_bf16_rel_l2" in r]
    for r in acc:
        if "attn_only_vs_bf16_rel_l2" in r:
            lines.append(f"{r['impl']}: eager bf16 model with only its attention in FP8 vs eager bf16 (velocity): "
                         f"rel L2 {r['attn_only_vs_bf16_rel_l2']:.2e} cos {r['attn_only_vs_bf16_cos']:.5f}")  # fmt: skip
        lines.append(
            f"{r['impl']} accuracy at {r['accuracy_frames']} frames (velocity): "
            f"vs bf16 rel L2 {r['fp8_vs_bf16_rel_l2']:.2e} cos {r['fp8_vs_bf16_cos']:.5f}; "
            f"vs f32 rel L2 {r['fp8_vs_f32_rel_l2']:.2e} cos {r['fp8_vs_f32_cos']:.5f}; "
            f"bf16 vs f32 rel L2 {r['bf16_vs_f32_rel_l2']:.2e} cos {r['bf16_vs_f32_cos']:.5f}; "
            f"FP8 matmul vs emulation {r['fp8_matmul_vs_emulation_rel_l2']:.1e}"
        )
    return "\n".join(lines)


def main() -> None:
    from sanawm.benchmark import merge_records

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--frames", nargs="+", type=int, default=[81, 321, 961])
    parser.add_argument("--accuracy-frames", type=int, default=81, help="clip length of the accuracy checks")
    parser.add_argument("--skip-accuracy", action="store_true",
                        help="time only: no FP8 / compiled-vs-eager accuracy checks (each compiles once more)")
    parser.add_argument("--warmup", type=int, default=0, help="untimed calls after the first call")
    parser.add_argument("--compile-mode", help="torch.compile mode of the compiled implementations' blocks "
                        "(e.g. max-autotune-no-cudagraphs; default: inductor's default), kept in the records")
    parser.add_argument("--temporal-conv", choices=("gemm", "cudnn"), default="gemm",
                        help="the FFN's temporal conv on CUDA: the GEMM op (the model's default) or cuDNN's conv")
    parser.add_argument("--gdn-precision", choices=("ieee", "tf32"), default=None,
                        help="the GDN kernels' precision (default: the model's, auto = tf32 for bf16)")
    parser.add_argument("--inductor", action="append", default=[], metavar="KEY=VALUE",
                        help="inductor option for the compiled implementations (repeatable)")
    parser.add_argument("--fp8-families", default="default", metavar="default|all|FAMILY+FAMILY",
                        help="the FP8 implementations' matmul families (sanawm.ops.fp8.FP8_FAMILIES): convert_to_fp8's "
                             "default, all of them, or a '+'-joined list")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--text-len", type=int, default=300)
    parser.add_argument("--tiny", action="store_true", help="tiny models on the CPU, float32")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per implementation's process")
    parser.add_argument("--budget", type=int, default=3600, help="seconds for all processes together")
    parser.add_argument("--json", default="benchmarks/hopper.json")
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    bad = [f for f in [*args.frames, args.accuracy_frames] if f < 1 or (f - 1) % 8]
    if bad:
        parser.error(f"frame counts must be 8k+1, got {bad}")
    from sanawm.benchmark import parse_inductor_options
    from sanawm.errors import UserInputError

    try:
        parse_inductor_options(args.inductor)  # a malformed option fails here, not in every worker
    except UserInputError as err:
        parser.error(str(err))
    if args.inductor and args.compile_mode:
        parser.error("--inductor and --compile-mode cannot be combined (torch.compile takes one or the other)")
    try:
        args.fp8_families, args.fp8_suffix = fp8_families(args.fp8_families)
    except ValueError as err:
        parser.error(str(err))

    if args.worker:
        device = torch.device("cpu" if args.tiny else "cuda")
        dtype = torch.float32 if args.tiny else torch.bfloat16
        if args.worker == "diffusers":
            records = diffusers_worker(args, device, dtype)
        else:
            records = sanawm_worker(args.worker, args, device, dtype)
        save(args, records)
        return

    records: list[dict] = []
    deadline = time.monotonic() + args.budget
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    for impl in args.impls:
        left = deadline - time.monotonic()
        if left < 20:
            print(f"[{impl}] skipped: the --budget of {args.budget} s is spent", flush=True)
            continue
        records += run_worker(impl, args, min(args.timeout, left))
        # after each, in case a later one hangs; records of other keys (e.g. the clip benchmark's) stay
        Path(args.json).write_text(json.dumps(merge_records(Path(args.json), records), indent=1) + "\n")
    print(f"\nwrote {len(records)} records to {args.json}")
    print(ratio_table(records, args.frames))
    for r in records:
        if "compiled_vs_eager_rel_l2" in r:
            print(f"{r['impl']} vs eager bf16 at {args.accuracy_frames} frames: "
                  f"rel L2 {r['compiled_vs_eager_rel_l2']:.2e} cos {r['compiled_vs_eager_cos']:.5f}")  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
