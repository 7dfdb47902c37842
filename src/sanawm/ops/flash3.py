"""FP8 softmax attention on FlashAttention-3's Hopper kernel (`fa3-fwd` on PyPI, prebuilt).

    out = flash3_fp8_forward(q, k, v, scale)    # (B, H, N, D) each -> (B, H, Nq, D), q's dtype

FA3's FP8 forward takes q, k, v in e4m3 with one descale per batch and head, so the scales here
are per head (e4m3 keeps 3 significand bits down to 2^-6 of its largest value, so a per-head
scale costs little against per-token or per-channel ones for these activations):
- q: s_q = amax |q| / 448;
- k: its mean over the keys is taken out first (per head and channel; softmax is invariant to
  it, as in `sanawm.ops.fp8_attention`), then s_k = amax |k| / 448;
- v: its mean over the keys is taken out too, and added to the output afterwards (a row's
  softmax weights sum to 1, so out = P (v - mean) / sum P + mean exactly); then
  s_v = amax / 448. Why: FA3 carries P @ V across all key tiles in the tensor cores' FP8
  accumulator, which Hopper keeps at reduced, truncating precision. With the mean in, that
  accumulator grows with every tile and each later tile loses more of its low bits: on the
  2.6B model's own q / k / v at 961 frames (106,480 keys) the output was 0.29 (relative L2)
  from float32 attention, 0.04 at 81 frames; centred, 0.017 and 0.012 (benchmarks/README.md);
- P: the kernel computes 2^(S - m + 8) with m the running row maximum (so the largest P of a
  row is 256), sums the rows in fp32 before rounding, and rounds P to e4m3 for P @ V;
- the output is bf16.
Head dim 112 runs in FA3's head-dim-128 kernel (loads beyond 112 are zero-filled), so it pays
for 128 where FA4 (`sanawm.ops.flash`, bf16) runs 112 as 112: what FP8 wins is measured
against that in benchmarks/README.md.

The call is the custom op `sanawm::flash3_fp8_attention`, opaque under `torch.compile` like the
other attention kernels; `quantize_per_head` is plain PyTorch, so inductor fuses it into the
kernels that produce q / k / v. On the CPU the op is `sanawm.ops.fp8_attention.emulate` with
the per-head scales and P's 2^8: the same quantised math in float32 with key tiles of 128 (FA3's
tiles differ, which moves where the running maximum is taken, and so only P's rounding). The
CPU tests hold it to float64 attention and run the model's "flash3-fp8" path through it;
scripts/bench_fp8_attention.py measures the CUDA kernel against float32 attention and the
emulation (which does not model the truncating accumulator: 3.4e-2 apart at 961 frames).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sanawm.ops.flash import sm90_kernel_unavailable
from sanawm.ops.fp8 import E4M3_MAX
from sanawm.ops.fp8_attention import K_BLOCK, emulate, quantize_e4m3

P_MAX_LOG2 = 8.0
"""FA3's FP8 kernel subtracts 8 from the running maximum (log2 units) before exp2."""
# All-zero heads get this amax, so their scale is finite and positive.
_MIN_AMAX = 1e-12


def flash3_unavailable(device: torch.device | str) -> str | None:
    """Why the "flash3-fp8" kernel cannot run on `device`, or None if it can."""
    return sm90_kernel_unavailable(device, "flash3-fp8", ("fa3_fwd_interface",), "fa3-fwd")


def quantize_per_head(
    q: Tensor, k: Tensor, v: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """q (B, H, Nq, D), k / v (B, H, Nk, D) -> q8, k8, v8 (layouts as given, e4m3; k and v
    centred over the keys), their fp32 scales (B, H) each, and v's mean (B, H, 1, D) fp32, which
    the attention of the centred values leaves out of the output."""
    q32, k32, v32 = q.float(), k.float(), v.float()
    k32 = k32 - k32.mean(dim=-2, keepdim=True)
    v_mean = v32.mean(dim=-2, keepdim=True)
    v32 = v32 - v_mean
    scales = [t.abs().amax(dim=(-2, -1)).clamp_min(_MIN_AMAX) / E4M3_MAX for t in (q32, k32, v32)]
    q8, k8, v8 = (quantize_e4m3(t, s[..., None, None]) for t, s in zip((q32, k32, v32), scales))
    return q8, k8, v8, *scales, v_mean


@torch.library.custom_op("sanawm::flash3_fp8_attention", mutates_args=(), device_types="cuda")
def flash3_fp8_attention(
    q8: Tensor, k8: Tensor, v8: Tensor, q_scale: Tensor, k_scale: Tensor, v_scale: Tensor, scale: float,
    out_dtype: torch.dtype,
) -> Tensor:  # fmt: skip
    """q8 (B, Nq, H, D), k8 / v8 (B, Nk, H, D) e4m3 with last dim contiguous, scales (B, H) fp32
    -> (B, Nq, H, D) contiguous in `out_dtype`."""
    from fa3_fwd_interface import flash_attn_func

    out = flash_attn_func(q8, k8, v8, softmax_scale=scale, q_descale=q_scale, k_descale=k_scale, v_descale=v_scale)
    return out.to(out_dtype)


@flash3_fp8_attention.register_kernel("cpu")
def _flash3_fp8_attention_cpu(q8, k8, v8, q_scale, k_scale, v_scale, scale, out_dtype):
    q8, k8, v8 = (t.transpose(1, 2) for t in (q8, k8, v8))  # (B, H, N, D)
    blocks = -(-k8.shape[2] // K_BLOCK)
    out = emulate(
        q8, k8, v8.transpose(-1, -2), q_scale[..., None].expand(-1, -1, q8.shape[2]),
        k_scale[..., None].expand(-1, -1, blocks), v_scale[..., None].expand(-1, -1, v8.shape[-1]), scale,
        out_dtype, p_max_log2=P_MAX_LOG2,
    )  # fmt: skip
    return out.transpose(1, 2).contiguous()  # (B, Nq, H, D), like the kernel and the fake


@flash3_fp8_attention.register_fake
def _flash3_fp8_attention_fake(q8, k8, v8, q_scale, k_scale, v_scale, scale, out_dtype):
    return q8.new_empty(q8.shape, dtype=out_dtype)


def flash3_fp8_forward(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Softmax attention of q (B, H, Nq, D) over k / v (B, H, Nk, D), no mask, in FP8 ->
    (B, H, Nq, D) in q's dtype (a view of a token-major (B, Nq, H, D) tensor)."""
    q8, k8, v8, q_scale, k_scale, v_scale, v_mean = quantize_per_head(q, k, v)
    q8, k8, v8 = (t.transpose(1, 2) for t in (q8, k8, v8))  # FA3's layout: (B, N, H, D)
    if torch.compiler.is_compiling():
        # As for FA4 (`sanawm.ops.flash.attention`): the op gets the strides traced here, so ask
        # the kernels that quantise q / k / v to write FA3's token-major layout directly.
        q8, k8, v8 = (t.contiguous() for t in (q8, k8, v8))
    else:
        q8, k8, v8 = (t if t.stride(-1) == 1 else t.contiguous() for t in (q8, k8, v8))
    out = flash3_fp8_attention(q8, k8, v8, q_scale, k_scale, v_scale, scale, q.dtype)  # (B, Nq, H, D)
    # In FA3's token-major layout, so that the result stays token-major (under compile this add
    # is fused into the kernel that reads the output).
    return (out.float() + v_mean.transpose(1, 2)).to(q.dtype).transpose(1, 2)


__all__ = ["P_MAX_LOG2", "flash3_unavailable", "quantize_per_head", "flash3_fp8_attention", "flash3_fp8_forward"]
