"""The FFN's temporal conv and its residual, y + t_conv(y), as accumulating GEMMs.

    out = frame_conv_residual(y, weight)   # y (B, C, T, S) view of (B, T, S, C) memory -> (B, T, S, C)

For frames that form one chunk with no carried context (a bidirectional clip: the stage-1
forward), the centred kernel-K conv along frames, zero frames past either end, is on each batch
item's token rows (T*S, C) one GEMM per tap with the rows shifted by whole frames:

    out[t] = y[t] + sum_k y[t + k - K//2] W_k^T      (W_k = weight[:, :, k, 0]; y is 0 outside 0..T-1)

The centre tap's GEMM takes the residual through its `beta` input (addmm); the other taps
accumulate in place into frame slices of the same output (addmm_ on a contiguous row range),
so the zero padding costs nothing and the frames the shifted rows would read past either end
are simply left out of that GEMM.

- `frame_conv_residual_reference`: `y + frame_conv_channels_first(y, weight)` (cuDNN's implicit
  GEMM on the channels-last view, then the add): what the CPU, training, chunk-causal and
  streaming calls run.
- On CUDA for inference, the custom op `sanawm::frame_conv_residual` (`frame_conv_residual_gemm`):
  cuBLAS GEMMs. An opaque op so that inductor keeps the in-place accumulation: traced, each
  addmm_ into a slice of the output becomes a functional GEMM and a slice_scatter. On one H200
  (2.6B shapes, eager, scripts/bench_temporal_conv.py): 4.6 ms per block against 5.7 ms for
  cuDNN's conv and the add at 961 frames, 1.85 against 1.98 ms at 321, even at 81; the whole
  compiled forward 2.888-2.893 s against 2.899 s at 961 frames (benchmarks/README.md).

The identity is not folded into the centre tap (W_1 + I) to save the add: in bf16, 1 + w keeps
only 8 bits of w. Each GEMM sums in float32 and rounds its output, so the bf16 result is
rounded K times (the reference: twice, after the conv and after the add): 3.0e-3 relative L2
against float32 on the H200 where cuDNN's conv and add have 2.1e-3 (and the folded identity
3.2e-3); both stay within bf16 noise of float64 (tests/test_frame_conv_gemm.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sanawm.ops.temporal import frame_conv_channels_first


def frame_conv_residual(y: Tensor, weight: Tensor) -> Tensor:
    """y (B, C, T, S), one chunk, no context; weight (C, C, K, 1) with odd K -> y + conv(y) as
    (B, T, S, C). The GEMM op where `gemm_applies`, otherwise the reference."""
    if gemm_applies(y, weight):
        return frame_conv_residual_op(y.permute(0, 2, 3, 1), weight)
    return frame_conv_residual_reference(y, weight)


def gemm_applies(y: Tensor, weight: Tensor) -> bool:
    """CUDA, and no gradient asked for: the op has no backward, so training runs the reference.
    (On the CPU oneDNN's conv is the faster form: the GEMMs were not measured there.)"""
    wants_grad = torch.is_grad_enabled() and (y.requires_grad or weight.requires_grad)
    return y.is_cuda and not wants_grad


def frame_conv_residual_reference(y: Tensor, weight: Tensor) -> Tensor:
    """The model's conv path: one padded conv2d over frames, then the residual."""
    return (y + frame_conv_channels_first(y, weight)).permute(0, 2, 3, 1)


def frame_conv_residual_gemm(x: Tensor, weight: Tensor) -> Tensor:
    """x (B, T, S, C) tokens; weight (C, C, K, 1) -> x + conv(x) along T, (B, T, S, C)
    contiguous, as K GEMMs per batch item (any device; the op's body)."""
    B, T, S, C = x.shape
    half = weight.shape[2] // 2
    # (K, C_in, C_out): one copy of the weight (~30 MB at C = 2240), as cuBLAS needs a unit
    # stride that weight[:, :, k, 0] lacks
    taps = weight[..., 0].permute(2, 1, 0).to(x.dtype).contiguous()
    x = x.contiguous()
    out = torch.empty_like(x)
    for b in range(B):
        rows, acc = x[b].view(T * S, C), out[b].view(T * S, C)
        torch.addmm(rows, rows, taps[half], out=acc)  # residual + centre tap
        for k in range(weight.shape[2]):
            shift = (k - half) * S  # tap k reads the rows `shift` further on
            if k == half or abs(shift) >= T * S:  # a shift of all frames reads only padding
                continue
            if shift < 0:  # an earlier frame: outputs from frame half - k on
                acc[-shift:].addmm_(rows[:shift], taps[k])
            else:  # a later frame: outputs up to the frame before T - (k - half)
                acc[:-shift].addmm_(rows[shift:], taps[k])
    return out


@torch.library.custom_op("sanawm::frame_conv_residual", mutates_args=())
def frame_conv_residual_op(x: Tensor, weight: Tensor) -> Tensor:
    return frame_conv_residual_gemm(x, weight)


@frame_conv_residual_op.register_fake
def _frame_conv_residual_fake(x: Tensor, weight: Tensor) -> Tensor:
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)  # contiguous, as the GEMMs write it


__all__ = [
    "frame_conv_residual",
    "frame_conv_residual_gemm",
    "frame_conv_residual_op",
    "frame_conv_residual_reference",
    "gemm_applies",
]
