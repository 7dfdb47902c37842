"""FP8 (e4m3) softmax attention for Hopper: quantisation, a Triton kernel as a torch custom op,
and its float32 emulation.

    out = fp8_attention_forward(q, k, v, scale)    # (B, H, N, D) each -> (B, H, Nq, D), q's dtype

What is quantised, and with which scales (e4m3: 3 significand bits, largest finite 448):
- q: one scale per query token and head, s_q = amax_d |q| / 448;
- k: first its mean over the keys is taken out (per head and channel; softmax is invariant to
  it: every score of a query moves by the same q . mean), then one scale per head and block
  of 128 keys (the kernel's key tile), s_k = amax / 448;
- v: one scale per head and channel over all keys, s_v = amax_n |v| / 448, applied to the
  output; v8 is stored transposed, (B, H, D, N), as the FP8 tensor cores take it;
- P = 448 * 2^(S - m) with m the running row maximum of the online softmax: a fixed scale
  (the largest P of a row is 448, e4m3's maximum; it cancels against the row sum, which is
  summed in fp32 from the unrounded P);
- both products accumulate in fp32; the output is the inputs' dtype (bf16 on the GPU).

`quantize_qkv` is plain PyTorch, so under `torch.compile` inductor fuses it into the kernel
that applies RoPE. The attention itself is the custom op `sanawm::fp8_attention` (one opaque
node under compile, like `sanawm::flash4_attention`): on CUDA the Triton kernel of
`sanawm.ops.fp8_attention_kernel`, on the CPU `emulate`, the same quantised math in float32
(key tiles of 128 with the same running maxima; exp2 exact where the kernel may evaluate part
of it as a polynomial of relative error <= 7e-4). The CPU tests hold the emulation to float64
attention and run the model's "fp8" path through it; tests/test_fp8_attention.py also runs the
Triton kernel itself in Triton's CPU interpreter against it; scripts/bench_fp8_attention.py
measures the CUDA kernel against float32 attention and cuDNN on an H200.
"""

from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from sanawm.ops.fp8 import E4M3_MAX, FP8_DTYPE

K_BLOCK = 128
"""Keys per scale block (and per tile of the kernel and of the emulation)."""
# All-zero rows / blocks / channels get this amax, so their scale is finite and positive.
_MIN_AMAX = 1e-12


def fp8_attention_unavailable(device: torch.device | str) -> str | None:
    """Why the "fp8" attention kernel cannot run on `device`, or None if it can."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"the fp8 attention kernel needs a CUDA GPU (got device {device.type})"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        return f"the fp8 attention kernel needs FP8 tensor cores (compute capability 8.9+); this GPU is {major}.{minor}"
    if importlib.util.find_spec("triton") is None:
        return "the fp8 attention kernel needs the triton package"
    return None


def quantize_e4m3(x: Tensor, scale: Tensor) -> Tensor:
    """x / scale rounded to e4m3, saturating at its largest finite value."""
    return (x / scale).clamp(-E4M3_MAX, E4M3_MAX).to(FP8_DTYPE)


def quantize_qkv(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """q (B, H, Nq, D), k / v (B, H, Nk, D) -> q8, k8 (layouts as given), v8^T (B, H, D, Nk)
    contiguous, and the fp32 scales s_q (B, H, Nq), s_k (B, H, ceil(Nk / 128)), s_v (B, H, D)."""
    q32, v32 = q.float(), v.float()
    k32 = k.float()
    k32 = k32 - k32.mean(dim=-2, keepdim=True)
    q_scale = q32.abs().amax(dim=-1).clamp_min(_MIN_AMAX) / E4M3_MAX
    nk = k.shape[2]
    blocks = -(-nk // K_BLOCK)
    k_amax = F.pad(k32.abs().amax(dim=-1), (0, blocks * K_BLOCK - nk)).unflatten(-1, (blocks, K_BLOCK)).amax(-1)
    k_scale = k_amax.clamp_min(_MIN_AMAX) / E4M3_MAX
    v_scale = v32.abs().amax(dim=-2).clamp_min(_MIN_AMAX) / E4M3_MAX
    per_key = k_scale.repeat_interleave(K_BLOCK, dim=-1)[..., :nk]
    q8 = quantize_e4m3(q32, q_scale[..., None])
    k8 = quantize_e4m3(k32, per_key[..., None])
    vt8 = quantize_e4m3(v32, v_scale[..., None, :]).transpose(-1, -2).contiguous()
    return q8, k8, vt8, q_scale, k_scale, v_scale


def emulate(
    q8: Tensor, k8: Tensor, vt8: Tensor, q_scale: Tensor, k_scale: Tensor, v_scale: Tensor, scale: float,
    out_dtype: torch.dtype, p_max_log2: float = math.log2(E4M3_MAX),
) -> Tensor:  # fmt: skip
    """The kernel's math in float32 on any device: (B, H, Nq, D) in `out_dtype`. The largest P
    of a row is 2^`p_max_log2` (448 here; FlashAttention-3's FP8 kernel uses 256,
    `sanawm.ops.flash3`)."""
    q = q8.float()
    row_scale = q_scale.float() * scale * 1.4426950408889634  # scores in log2 units
    B, H, Nq, D = q.shape
    m = q.new_full((B, H, Nq), float("-inf"))
    l = q.new_zeros((B, H, Nq))
    acc = q.new_zeros((B, H, Nq, D))
    for t, start in enumerate(range(0, k8.shape[2], K_BLOCK)):
        k = k8[:, :, start : start + K_BLOCK].float()
        v = vt8[:, :, :, start : start + K_BLOCK].float().transpose(-1, -2)
        s = (q @ k.transpose(-1, -2)) * (row_scale * k_scale[:, :, t, None].float())[..., None]
        m_new = torch.maximum(m, s.amax(dim=-1))
        p = torch.exp2(s - (m_new - p_max_log2)[..., None])
        alpha = torch.exp2(m - m_new)
        l = l * alpha + p.sum(dim=-1)
        acc = acc * alpha[..., None] + p.to(FP8_DTYPE).float() @ v
        m = m_new
    return (acc * (v_scale.float()[:, :, None, :] / l[..., None])).to(out_dtype)


@torch.library.custom_op("sanawm::fp8_attention", mutates_args=(), device_types="cuda")
def fp8_attention(
    q8: Tensor, k8: Tensor, vt8: Tensor, q_scale: Tensor, k_scale: Tensor, v_scale: Tensor, scale: float,
    out_dtype: torch.dtype,
) -> Tensor:  # fmt: skip
    """The arguments of `quantize_qkv`'s results -> (B, Nq, H, D) contiguous in `out_dtype`."""
    from sanawm.ops.fp8_attention_kernel import launch

    q8, k8, vt8 = (t if t.stride(-1) == 1 else t.contiguous() for t in (q8, k8, vt8))
    B, H, Nq, D = q8.shape
    out = torch.empty(B, Nq, H, D, device=q8.device, dtype=out_dtype)
    return launch(q8, k8, vt8, q_scale, k_scale, v_scale, scale, out)


@fp8_attention.register_kernel("cpu")
def _fp8_attention_cpu(q8, k8, vt8, q_scale, k_scale, v_scale, scale, out_dtype):
    out = emulate(q8, k8, vt8, q_scale, k_scale, v_scale, scale, out_dtype)
    return out.transpose(1, 2).contiguous()  # (B, Nq, H, D), like the kernel and the fake


@fp8_attention.register_fake
def _fp8_attention_fake(q8, k8, vt8, q_scale, k_scale, v_scale, scale, out_dtype):
    B, H, Nq, D = q8.shape
    return q8.new_empty((B, Nq, H, D), dtype=out_dtype)


def fp8_attention_forward(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Softmax attention of q (B, H, Nq, D) over k / v (B, H, Nk, D), no mask, in FP8 ->
    (B, H, Nq, D) in q's dtype (a view of a token-major (B, Nq, H, D) tensor)."""
    out = fp8_attention(*quantize_qkv(q, k, v), scale, q.dtype)
    return out.transpose(1, 2)


__all__ = [
    "K_BLOCK",
    "fp8_attention_unavailable",
    "quantize_e4m3",
    "quantize_qkv",
    "emulate",
    "fp8_attention",
    "fp8_attention_forward",
]
