"""The middle of the GLUMBConv FFN in one pass: SiLU, the 3x3 depthwise conv, then the GLU.

    glu = silu_depthwise_glu(pre, weight, bias)   # pre (N, H, W, 2F) channels-last -> (N, H, W, F)

`pre` is the FFN's first 1x1 conv for N frames in the token layout; with (a, g) the two channel
halves of h = depthwise_conv3x3(SiLU(pre)) + bias, the result is a * SiLU(g).

- `silu_depthwise_glu_reference`: SiLU, `F.conv2d(groups=2F)` on the channels-last view, GLU
  (three kernels and two 2F-wide intermediates; what the CPU and eager code run).
- On CUDA: SiLU in PyTorch (under torch.compile inductor fuses it into the kernel that
  produces `pre`: the first 1x1 conv's bias add or FP8 epilogue), then the custom op
  `sanawm::depthwise_glu` (one opaque node) on SiLU(pre): the Triton kernel below, where each
  program reads its 3x3 neighbourhood (from cache after the first read) and writes only the
  F-wide result, so the 2F-wide conv output never goes to memory. SiLU is not recomputed in
  the kernel: for each of the 9 taps it would be (an H200 profile at 961 frames: 13.9 ms per
  90-frame slice that way, against ~5 ms for the three kernels; benchmarks/README.md). Inside
  the op SiLU ran as its own eager kernel (one more pass over the 2F-wide tensor, ~30 ms of a
  961-frame forward on an H200).
  On an H200 (90-frame slice of the 2.6B shapes): 3.8 ms against 8.6 ms for the three eager
  kernels; in a compiled forward on par with inductor's SiLU and GLU fused around cuDNN's
  depthwise conv (~110 ms per 961-frame forward either way).
  (Written out as shifted multiply-adds for inductor instead, the stencil came out as several
  kernels and 3x slower: benchmarks/README.md.)

Both round SiLU to the input dtype; the kernel then sums the conv in float32 and rounds once
at the end, where the reference also rounds the conv's output, so the two differ by bf16
rounding (tests hold both to float64 loops, the kernel in Triton's CPU interpreter).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the reference runs
    triton = None


def silu_depthwise_glu(pre: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """pre (N, H, W, 2F), last dim contiguous; weight (2F, 1, 3, 3); bias (2F,) or None ->
    (N, H, W, F) in pre's dtype. The fused kernel where `fused_kernel_applies`, otherwise the
    reference."""
    if fused_kernel_applies(pre, weight):
        return depthwise_glu_op(F.silu(pre), weight, bias)
    return silu_depthwise_glu_reference(pre, weight, bias)


def fused_kernel_applies(pre: Tensor, weight: Tensor) -> bool:
    """CUDA with Triton, and no gradient asked for: the kernel has no backward, so training
    (the trainer, distillation) runs the reference form."""
    wants_grad = torch.is_grad_enabled() and (pre.requires_grad or weight.requires_grad)
    return pre.is_cuda and triton is not None and not wants_grad


def silu_depthwise_glu_reference(pre: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The reference form: SiLU, one depthwise conv2d, GLU."""
    return depthwise_glu_reference(F.silu(pre), weight, bias)


def depthwise_glu_reference(act: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The depthwise conv2d and the GLU of act = SiLU(pre) (N, H, W, 2F) -> (N, H, W, F)."""
    h = F.conv2d(act.permute(0, 3, 1, 2), weight, bias, padding=1, groups=weight.shape[0])
    a, g = h.chunk(2, dim=1)
    return (a * F.silu(g)).permute(0, 2, 3, 1)


@torch.library.custom_op("sanawm::depthwise_glu", mutates_args=(), device_types="cuda")
def depthwise_glu_op(act: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """act = SiLU(pre) (N, H, W, 2F) -> (N, H, W, F) contiguous."""
    N, H, W, C2 = act.shape
    out = act.new_empty(N, H, W, C2 // 2)
    launch(act if act.stride(-1) == 1 else act.contiguous(), weight, bias, out)
    return out


@depthwise_glu_op.register_kernel("cpu")
def _depthwise_glu_cpu(act: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return depthwise_glu_reference(act, weight, bias).contiguous()  # the kernel's layout


@depthwise_glu_op.register_fake
def _depthwise_glu_fake(act: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    N, H, W, C2 = act.shape
    return act.new_empty(N, H, W, C2 // 2)


# Pixels x channels per program. 8 pixels divide SANA-WM's 40-latent rows (704x1280) with no
# masked-off lanes.
BLOCK_W = 8
BLOCK_C = 128
NUM_WARPS = 4


def launch(act: Tensor, weight: Tensor, bias: Tensor | None, out: Tensor, *, block_w: int = BLOCK_W,
           block_c: int = BLOCK_C, num_warps: int = NUM_WARPS) -> None:  # fmt: skip
    """Run the kernel on act = SiLU(pre) (N, H, W, 2F) with unit channel stride; out (N, H, W, F)
    contiguous."""
    N, H, W, C2 = act.shape
    F_ = C2 // 2
    assert act.stride(-1) == 1 and out.is_contiguous() and out.shape == (N, H, W, F_), (act.stride(), out.shape)
    taps = weight.reshape(C2, 9).float().contiguous()  # (2F, 9), row-major over (dy, dx)
    b = (bias if bias is not None else weight.new_zeros(C2)).float().contiguous()
    grid = (N * H, triton.cdiv(W, block_w), triton.cdiv(F_, block_c))
    _depthwise_glu_kernel[grid](
        act, taps, b, out, H, W, F_, *act.stride()[:3],
        BLOCK_W=block_w, BLOCK_C=block_c, num_warps=num_warps,
    )  # fmt: skip


if triton is not None:

    @triton.jit
    def _depthwise_glu_kernel(
        act, taps, bias, out, H, W, F, stride_n, stride_h, stride_w,
        BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        # One program: output row y of frame n, BLOCK_W pixels from x0, BLOCK_C channels of each
        # half (a: channels c, g: channels F + c).
        row = tl.program_id(0)
        n = row // H
        y = row % H
        xs = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
        cs = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = cs < F
        acc_a = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
        acc_g = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
        base = act + n.to(tl.int64) * stride_n
        for dy in tl.static_range(3):
            yy = y + dy - 1
            ys = tl.full((BLOCK_W,), 0, tl.int32) + yy  # the row as a vector: masks stay vectors of int1
            row_ok = (ys >= 0) & (ys < H)
            for dx in tl.static_range(3):
                xx = xs + dx - 1
                ok = row_ok & (xx >= 0) & (xx < W)
                offs = base + yy.to(tl.int64) * stride_h + xx[:, None].to(tl.int64) * stride_w + cs[None, :]
                mask = ok[:, None] & c_ok[None, :]
                va = tl.load(offs, mask=mask, other=0.0).to(tl.float32)
                vg = tl.load(offs + F, mask=mask, other=0.0).to(tl.float32)
                wa = tl.load(taps + cs * 9 + (3 * dy + dx), mask=c_ok, other=0.0)
                wg = tl.load(taps + (F + cs) * 9 + (3 * dy + dx), mask=c_ok, other=0.0)
                acc_a += va * wa[None, :]
                acc_g += vg * wg[None, :]
        acc_a += tl.load(bias + cs, mask=c_ok, other=0.0)[None, :]
        acc_g += tl.load(bias + F + cs, mask=c_ok, other=0.0)[None, :]
        result = acc_a * (acc_g * tl.sigmoid(acc_g))
        dst = out + (row.to(tl.int64) * W + xs[:, None].to(tl.int64)) * F + cs[None, :]
        tl.store(dst, result.to(out.dtype.element_ty), mask=(xs < W)[:, None] & c_ok[None, :])


__all__ = [
    "silu_depthwise_glu",
    "silu_depthwise_glu_reference",
    "depthwise_glu_reference",
    "depthwise_glu_op",
    "fused_kernel_applies",
    "launch",
]
