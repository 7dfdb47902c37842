"""Softmax attention kernels for the softmax blocks: PyTorch SDPA, FlashAttention-4, or FP8 on Hopper.

    attention(q, k, v, scale, kernel)      # q (B, H, Nq, D), k / v (B, H, Nk, D) -> (B, H, Nq, D)

- "sdpa": `F.scaled_dot_product_attention` (cuDNN / flash / memory-efficient / math, as
  PyTorch picks). It is the reference path and what training uses.
- "flash4": the forward kernel of FlashAttention-4 (`flash-attn-4` on PyPI, CuTe DSL, JIT
  compiled on first use) for sm90. It runs head dim 112 as 112: cuDNN and PyTorch's flash
  kernel pad it to 128 and pay for the padding (issue 12 measured 209 ms per 106,480-token
  attention with cuDNN at 112 and at 128). Inference only: no backward.
- "fp8": q, k, v, and the softmax probabilities in e4m3 on the FP8 tensor cores, a Triton
  kernel (`sanawm.ops.fp8_attention`, custom op `sanawm::fp8_attention`; sm89+). It changes
  results beyond bf16 rounding: its error is measured by scripts/bench_fp8_attention.py and
  published in benchmarks/README.md. Inference only.
- "flash3-fp8": FP8 on FlashAttention-3's Hopper kernel (`fa3-fwd` on PyPI, prebuilt), with
  per-head scales (`sanawm.ops.flash3`). Changes results like "fp8"; inference only.

The FA4 call is wrapped in a torch custom op (`sanawm::flash4_attention`) so that
`torch.compile` (`sanawm.model.compile`) keeps it as one opaque kernel between its fused
regions instead of tracing into FA4's Python. The op's CPU implementation is the plain float32
attention of the same signature and layout; the CPU tests run the model's "flash4" path through
it (layouts, scale, chunk-causal splits, compile tracing), and `scripts/bench_attention.py`
holds the CUDA kernel equal to SDPA on the GPU.

Choose the kernel for a model with `use_attention_kernel(model, "flash4")` (in place, like
`compile_blocks`); `flash4_unavailable()` says why it cannot run here, or None.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTENTION_KERNELS = ("sdpa", "flash4", "fp8", "flash3-fp8")

# FA4's own sm90 choice for head dims 97-128 is 128x128 tiles with P@V from registers, tuned for
# 128. At 112 (SANA-WM's heads), 192x144 tiles with P@V from shared memory took 159 ms per
# 106,480-token attention on an H200 against 181-186 ms for FA4's choice (16 shapes timed in two runs,
# `scripts/bench_attention.py --sweep-flash4`, benchmarks/README.md).
# (tile_m, tile_n, P@V from registers, intra-warpgroup overlap) per head dim.
FLASH4_SM90_TILES = {112: (192, 144, False, True)}


def sm90_kernel_unavailable(
    device: torch.device | str, kernel: str, modules: tuple[str, ...], package: str
) -> str | None:
    """Why the Hopper-only attention kernel `kernel`, whose code is in `modules` of the PyPI
    package `package`, cannot run on `device`, or None if it can."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"the {kernel} attention kernel needs a CUDA GPU (got device {device.type})"
    major, _ = torch.cuda.get_device_capability(device)
    if major != 9:
        return f"the {kernel} attention kernel is built here for Hopper (sm90); this GPU is sm{major}x"
    if any(importlib.util.find_spec(module) is None for module in modules):
        return f"the {kernel} attention kernel needs the {package} package (pip install 'sanawm[hopper]')"
    return None


def flash4_unavailable(device: torch.device | str) -> str | None:
    """Why the "flash4" kernel cannot run on `device`, or None if it can."""
    return sm90_kernel_unavailable(device, "flash4", ("flash_attn", "flash_attn.cute"), "flash-attn-4")


@torch.library.custom_op("sanawm::flash4_attention", mutates_args=(), device_types="cuda")
def flash4_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """q (B, Nq, H, D), k / v (B, Nk, H, D), last dim contiguous -> (B, Nq, H, D), q's dtype."""
    from flash_attn.cute.interface import _flash_attn_fwd

    tiles = FLASH4_SM90_TILES.get(q.shape[-1])
    if tiles is None:
        return _flash_attn_fwd(q, k, v, softmax_scale=scale, causal=False)[0]
    tile_m, tile_n, pv_from_registers, overlap = tiles
    return _flash_attn_fwd(q, k, v, softmax_scale=scale, causal=False, tile_mn=(tile_m, tile_n),
                           mma_pv_is_rs=pv_from_registers, intra_wg_overlap=overlap)[0]  # fmt: skip


@flash4_attention.register_kernel("cpu")
def _flash4_attention_cpu(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    # The same function in plain float32 math: what the CPU tests run the "flash4" path through.
    scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * scale
    out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(dim=-1), v.float())
    return out.to(q.dtype).contiguous()  # contiguous (B, Nq, H, D), like FA4's output and the fake


@flash4_attention.register_fake
def _flash4_attention_fake(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    return q.new_empty(q.shape)


def attention(q: Tensor, k: Tensor, v: Tensor, scale: float | None, kernel: str) -> Tensor:
    """Softmax attention of q (B, H, Nq, D) over k / v (B, H, Nk, D), no mask -> (B, H, Nq, D)."""
    if kernel == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    assert kernel in ("flash4", "fp8", "flash3-fp8"), kernel
    assert not (torch.is_grad_enabled() and q.requires_grad), f"the {kernel} kernel is inference only"
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if kernel == "fp8":
        from sanawm.ops.fp8_attention import fp8_attention_forward

        return fp8_attention_forward(q, k, v, scale)
    if kernel == "flash3-fp8":
        from sanawm.ops.flash3 import flash3_fp8_forward

        return flash3_fp8_forward(q, k, v, scale)
    # (B, H, N, D) views of token-major tensors are (B, N, H, D) tensors transposed: FA4's
    # layout needs no copy for them.
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    if torch.compiler.is_compiling():
        # Inductor hands a custom op its inputs in the strides they had when traced. RoPE and
        # the camera transforms build head-major results, which the kernels producing q / k / v
        # then had to write; made token-major (FA4's layout) here, the producing kernels can
        # write that instead, with no extra copy. Why: on an H200 at 961 frames the camera
        # branch's fused transform kernel took 50 ms per softmax block with FA4 against 1.7 ms
        # with SDPA (benchmarks/README.md; the effect of this change is not yet measured).
        q, k, v = (t.contiguous() for t in (q, k, v))
    out = flash4_attention(q, k, v, scale)
    return out.transpose(1, 2)


def use_attention_kernel(model: nn.Module, kernel: str) -> nn.Module:
    """Run every softmax attention of `model` (the layers with an `attention_kernel`
    attribute) with `kernel`, in place; returns `model`."""
    assert kernel in ATTENTION_KERNELS, kernel
    for module in model.modules():
        if hasattr(module, "attention_kernel"):
            module.attention_kernel = kernel
    return model


__all__ = [
    "ATTENTION_KERNELS",
    "attention",
    "flash4_attention",
    "flash4_unavailable",
    "sm90_kernel_unavailable",
    "use_attention_kernel",
]
