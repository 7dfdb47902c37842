"""Check the fused Triton GDN against the float64 recurrent reference and time it (CUDA).

    python scripts/check_gdn_gpu.py                   # accuracy table + timings at the 2.6B shapes
    python scripts/check_gdn_gpu.py --sweep           # plus launch-shape variants of the fused path
    TRITON_INTERPRET=1 python scripts/check_gdn_gpu.py --tiny --device cpu   # smoke test on CPU

Accuracy: relative L2 error ||out - ref|| / ||ref|| of the output and of the final state for
bidirectional / chunk-causal / causal / initial-state `gdn` and `delta_rule`, fp32 and bf16
inputs, both precisions, inputs in the model's strided layout; the reference runs in float64
on the same (rounded) inputs. For bf16 outputs the error of rounding the reference itself to
bf16 is printed as the floor. Timings: median of CUDA-event-timed calls at
B=1, H=20, T=121, S=880, D=112 (bf16), torch path vs fused path.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from sanawm.ops.gdn import fused as gdn_triton
from sanawm.ops.gdn import GDNState, delta_rule, gdn, gdn_reference


def model_layout(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, S, D) values stored as (B, T, S, H, D), as the model's head views are."""
    return x.permute(0, 2, 3, 1, 4).contiguous().permute(0, 3, 1, 2, 4)


def make_inputs(shape, dtype, device, seed: int, beta_dtype=None):
    B, H, T, S, D = shape
    g = torch.Generator(device="cpu").manual_seed(seed)

    def rnd(*s):
        return torch.randn(*s, generator=g)

    # The model's magnitudes: ReLU features, keys scaled by 1/sqrt(D*S), beta in (0, 1).
    q = F.relu(rnd(B, H, T, S, D))
    k = F.relu(rnd(B, H, T, S, D)) / (D * S) ** 0.5
    v = rnd(B, H, T, S, D)
    q_rot, k_rot = q + 0.3 * rnd(B, H, T, S, D), k + 0.05 * rnd(B, H, T, S, D) / (D * S) ** 0.5
    beta = torch.rand(B, H, T, S, generator=g)
    gamma = 0.5 + 0.5 * torch.rand(B, H, T, generator=g)
    big = [model_layout(t.to(device=device, dtype=dtype)) for t in (q, k, v, q_rot, k_rot)]
    return (*big, beta.to(device=device, dtype=beta_dtype or dtype), gamma.to(device))


def rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    a = a.double()
    if not torch.isfinite(a).all():
        return float("nan")
    return ((a - ref).norm() / ref.norm()).item()


def accuracy(device, sizes, precisions) -> list[str]:
    rows = []
    header = f"{'case':34s} {'dtype':9s} {'prec':5s} {'out':>9s} {'state':>9s} {'floor':>9s} {'torch':>9s}"
    rows.append(header)
    seed = 0
    for shape in sizes:
        T = shape[2]
        cases = {
            "bidirectional": dict(chunk_starts=None),
            "chunk-causal": dict(chunk_starts=sorted({0, T // 3, T // 3 + 1, 2 * T // 3} - {T})),
            "causal": dict(chunk_starts=list(range(T))),
            "init-state+chunks": dict(chunk_starts=sorted({0, T // 2}), init=True),
        }
        for dtype in (torch.float32, torch.bfloat16):
            for name, case in cases.items():
                for branch in ("gdn", "delta_rule"):
                    seed += 1
                    beta_dtype = torch.float32 if branch == "delta_rule" else None  # like the camera branch
                    x = make_inputs(shape, dtype, device, seed, beta_dtype)
                    x64 = tuple(t.double() for t in x)
                    init = init64 = None
                    if case.get("init"):
                        B, H, _, _, D = shape
                        g = torch.Generator(device="cpu").manual_seed(seed + 1000)
                        kv0 = (0.1 * torch.randn(B, H, D, D, generator=g)).to(device)
                        z0 = torch.rand(B, H, D, generator=g).to(device) if branch == "gdn" else None
                        init = GDNState(kv0, z0)
                        init64 = GDNState(kv0.double(), None if z0 is None else z0.double())
                    chunks = case["chunk_starts"]
                    if branch == "gdn":
                        ref, ref_state = gdn_reference(*x64, eps=1e-8, chunk_starts=chunks, initial_state=init64)
                        torch_out, _ = gdn(*x, eps=1e-8, chunk_starts=chunks, initial_state=init, backend="torch")
                    else:
                        q, k, v, qr, kr, beta, gamma = x64
                        ref, ref_state = gdn_reference(qr, kr, v, qr, kr, beta, gamma, eps=None,
                                                       chunk_starts=chunks, initial_state=init64)  # fmt: skip
                        torch_out, _ = delta_rule(x[3], x[4], x[2], x[5], x[6], chunk_starts=chunks,
                                                  initial_state=init, backend="torch")  # fmt: skip
                    floor = rel(ref.to(dtype), ref) if dtype != torch.float32 else 0.0
                    for prec in precisions:
                        if branch == "gdn":
                            out, state = gdn_triton.gdn_triton(*x, eps=1e-8, chunk_starts=chunks,
                                                               initial_state=init, precision=prec)  # fmt: skip
                        else:
                            out, state = gdn_triton.delta_rule_triton(x[3], x[4], x[2], x[5], x[6],
                                                                      chunk_starts=chunks, initial_state=init,
                                                                      precision=prec)  # fmt: skip
                        st_err = rel(state.kv, ref_state.kv)
                        if branch == "gdn":
                            st_err = max(st_err, rel(state.z, ref_state.z))
                        label = f"{branch} {name} {'x'.join(map(str, shape))}"
                        rows.append(
                            f"{label:34s} {str(dtype)[6:]:9s} {prec:5s} {rel(out, ref):9.2e} {st_err:9.2e} "
                            f"{floor:9.2e} {rel(torch_out, ref):9.2e}"
                        )
                        print(rows[-1], flush=True)
    return rows


def bench(fn, warmup=2, iters=7) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def timings(device, shape, sweep: bool) -> list[str]:
    x = make_inputs(shape, torch.bfloat16, device, 123)
    x_cam = make_inputs(shape, torch.bfloat16, device, 321, beta_dtype=torch.float32)
    T = shape[2]
    chunked = list(range(0, T, 10))
    rows = [f"{'op':12s} {'mode':14s} {'backend':22s} {'ms':>9s}"]

    def add(op, mode, backend, ms):
        rows.append(f"{op:12s} {mode:14s} {backend:22s} {ms:9.2f}")
        print(rows[-1], flush=True)

    with torch.inference_mode():
        for mode, chunks in (("bidirectional", None), ("chunks of 10", chunked)):
            add("gdn", mode, "torch", bench(lambda: gdn(*x, eps=1e-8, chunk_starts=chunks, backend="torch")))
            cam = (x_cam[3], x_cam[4], x_cam[2], x_cam[5], x_cam[6])
            add("delta_rule", mode, "torch", bench(lambda: delta_rule(*cam, chunk_starts=chunks, backend="torch")))
            for prec in gdn_triton.PRECISIONS:
                add("gdn", mode, f"triton {prec}", bench(lambda: gdn_triton.gdn_triton(
                    *x, eps=1e-8, chunk_starts=chunks, precision=prec)))  # fmt: skip
                add("delta_rule", mode, f"triton {prec}", bench(lambda: gdn_triton.delta_rule_triton(
                    *cam, chunk_starts=chunks, precision=prec)))  # fmt: skip
        if sweep:
            variants = [
                gdn_triton.Tuning(),
                gdn_triton.Tuning(transition_block_n=128, transition_warps=8),
                gdn_triton.Tuning(transition_block_s=128),
                gdn_triton.Tuning(transition_warps=8),
                gdn_triton.Tuning(scan_warps=4),
                gdn_triton.Tuning(scan_stages=3),
                gdn_triton.Tuning(readout_block_s=128, readout_warps=8),
                # Fewer scan programs per head, each re-reading W_t: half (32 rows) the W traffic.
                gdn_triton.Tuning(scan_block_rows=32),
                gdn_triton.Tuning(scan_block_rows=32, scan_warps=8),
            ]
            for tuning in variants:
                ms = bench(lambda: gdn_triton._fused(*x, eps=1e-8, chunk_starts=None, initial_state=None,
                                                     precision="ieee", tuning=tuning))  # fmt: skip
                changed = {k: v for k, v in vars(tuning).items() if getattr(gdn_triton.DEFAULT_TUNING, k) != v}
                rows.append(f"sweep gdn ieee {changed or 'default'}: {ms:.2f} ms")
                print(rows[-1], flush=True)
            # tf32 (the model's precision for bf16): transitions in tf32 or from bf16 pieces, both
            # branches (the camera branch's fp32 beta needs 3 pieces, the main branch's bf16 beta 2).
            cam = (x_cam[3], x_cam[4], x_cam[2], x_cam[3], x_cam[4])
            for pieces in (0, 2, 3):
                tuning = gdn_triton.Tuning(tf32_transition_pieces=pieces)
                main_ms = bench(lambda: gdn_triton._fused(*x, eps=1e-8, chunk_starts=None, initial_state=None,
                                                          precision="tf32", tuning=tuning))  # fmt: skip
                cam_ms = bench(lambda: gdn_triton._fused(
                    *cam, x_cam[5], x_cam[6], eps=None, chunk_starts=None, initial_state=None, precision="tf32",
                    tuning=tuning))  # fmt: skip
                rows.append(f"sweep tf32 tf32_transition_pieces={pieces}: gdn {main_ms:.2f} ms, "
                            f"delta_rule {cam_ms:.2f} ms")  # fmt: skip
                print(rows[-1], flush=True)
        # Kernel breakdown of one fused and one torch call.
        from torch.profiler import ProfilerActivity, profile

        for name, fn in (
            ("fused gdn ieee", lambda: gdn_triton.gdn_triton(*x, eps=1e-8)),
            ("torch gdn", lambda: gdn(*x, eps=1e-8, backend="torch")),
        ):
            fn()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn()
                torch.cuda.synchronize()
            print(f"--- kernels of one {name} call ---")
            print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=8, max_name_column_width=60))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="small accuracy sizes only, no timings")
    parser.add_argument("--sweep", action="store_true", help="time launch-shape variants too")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.tiny:
        sizes = [(1, 2, 5, 20, 12)]
    else:
        sizes = [(2, 3, 9, 150, 112), (1, 2, 4, 880, 112), (1, 1, 1, 33, 7)]
    acc = accuracy(device, sizes, gdn_triton.PRECISIONS)
    tim = [] if args.tiny else timings(device, (1, 20, 121, 880, 112), args.sweep)
    print("\n=== accuracy: relative L2 vs float64 recurrent reference (floor: bf16 rounding of ref) ===")
    print("\n".join(acc))
    if tim:
        print("\n=== timings (B=1, H=20, T=121, S=880, D=112, bf16; delta_rule with fp32 beta) ===")
        print("\n".join(tim))


if __name__ == "__main__":
    main()
