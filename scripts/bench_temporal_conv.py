"""The FFN's dense temporal conv (kernel 3 along frames, C -> C) plus its residual at 961 frames:
cuDNN's conv (the reference path) against three accumulating cuBLAS GEMMs on the token rows
with the identity folded into the centre tap, or the residual added through the first GEMM's
beta, and that last form as the model runs it on CUDA (the op `sanawm::frame_conv_residual`,
which also copies the weight into per-tap matrices).

    python scripts/bench_temporal_conv.py [--frames 121 41 11] [--repeat 20]

y is the FFN's spatial output, (B, C, T, S) viewed on (B, T, S, C) memory as in
`GLUFeedForward`; every form computes y + conv(y) for one bidirectional chunk. Prints ms per call,
TFLOP/s of the conv's multiply-adds and each form's relative L2 against the float32 conv (bf16,
random weights).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F


def conv_form(y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """y (B, C, T, S) channels-last view -> y + conv(y) as (B, T, S, C), the model's way."""
    out = y + F.conv2d(y, weight, padding=(weight.shape[2] // 2, 0))
    return out.permute(0, 2, 3, 1)


def gemm_form(rows: torch.Tensor, taps: torch.Tensor, frame: int) -> torch.Tensor:
    """rows (T*S, C) token-major; taps (3, C_in, C_out) with the identity in taps[1]:
    out[t] = y[t-1] W0 + y[t] (W1 + I) + y[t+1] W2, zeros past either end."""
    out = rows @ taps[1]
    out[frame:].addmm_(rows[:-frame], taps[0])
    out[:-frame].addmm_(rows[frame:], taps[2])
    return out


def gemm_beta_form(rows: torch.Tensor, taps: torch.Tensor, frame: int) -> torch.Tensor:
    """As `gemm_form`, but taps[1] holds W1 alone and the residual comes in through the first
    GEMM's beta (out = rows + rows W1): no identity rounded into bf16 weights."""
    out = torch.addmm(rows, rows, taps[1])
    out[frame:].addmm_(rows[:-frame], taps[0])
    out[:-frame].addmm_(rows[frame:], taps[2])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, nargs="+", default=[121], help="latent frames (121: a 961-frame clip)")
    p.add_argument("--tokens", type=int, default=880, help="tokens per latent frame (22 x 40)")
    p.add_argument("--channels", type=int, default=2240)
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args()
    for frames in args.frames:
        run(frames, args.tokens, args.channels, args.repeat)


def run(T: int, S: int, C: int, repeat: int) -> None:
    from sanawm.ops.frame_conv_gemm import frame_conv_residual_op

    torch.manual_seed(0)
    dev, dt = "cuda", torch.bfloat16
    x = torch.randn(1, T, S, C, device=dev, dtype=dt)
    weight = (torch.randn(C, C, 3, 1, device=dev) / (3 * C) ** 0.5).to(dt)
    y = x.permute(0, 3, 1, 2)  # (B, C, T, S) view, channels-last memory
    plain = weight[:, :, :, 0].permute(2, 1, 0).contiguous()  # (3, C_in, C_out)
    taps = plain.clone()
    taps[1] += torch.eye(C, device=dev, dtype=dt)
    rows = x.reshape(T * S, C)

    ref = conv_form(y.float(), weight.float()).reshape(T * S, C)
    results = {}
    for name, fn in (("cuDNN conv + residual", lambda: conv_form(y, weight)),
                     ("3 cuBLAS GEMMs, identity folded", lambda: gemm_form(rows, taps, S)),
                     ("3 cuBLAS GEMMs, residual through beta", lambda: gemm_beta_form(rows, plain, S)),
                     ("op sanawm::frame_conv_residual (the beta form + weight copy)",
                      lambda: frame_conv_residual_op(x, weight))):  # fmt: skip
        out = fn().reshape(T * S, C).float()
        err = ((out - ref).norm() / ref.norm()).item()
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(repeat):
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        ms = sorted(times)[len(times) // 2]
        results[name] = (ms, 2 * 3 * C * C * T * S / ms / 1e9, err)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, (T, S, C) = ({T}, {S}, {C}), bf16, median of {repeat}")
    print("| form | ms | TFLOP/s | rel. L2 vs float32 |")
    print("|---|---|---|---|")
    for name, (ms, tflops, err) in results.items():
        print(f"| {name} | {ms:.3f} | {tflops:.0f} | {err:.1e} |")

if __name__ == "__main__":
    main()
