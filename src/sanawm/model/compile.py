"""Regional `torch.compile` of the stage-1 DiT: each block compiled on its own.

    from sanawm.model.compile import compile_blocks
    compile_blocks(model)          # in place; opt-in, CUDA inference is what it is for

Why per block: the 20 blocks share one forward (`SanaWMBlock.forward`) and two structures
(GDN and softmax attention), so dynamo compiles two graphs and reuses them for every block,
which keeps compile time to a fraction of whole-model compile. What it buys: inductor fuses
the element-wise work between the matmuls and attention kernels (LayerNorm + modulation,
q/k RMSNorms, RoPE, the UCPE 4x4 transforms and RMS clamp, gates, residual adds, FP8
activation quantisation when `sanawm.ops.fp8` is in use) into a few Triton kernels.

Frame counts: static shapes by default (`dynamic=False`): each new frame count compiles once
more. A clip keeps its frame count for all sampling steps, so this compile is paid once per
clip length. With `dynamic=True` the softmax blocks keep the frame count symbolic (tests hold
one set of graphs for several counts); the GDN blocks do too on CUDA only if nothing else
specialises it there (their kernels run outside the graphs; not yet measured on a GPU), while
the CPU's PyTorch GDN path loops over frames in Python and recompiles per count. Clips whose
FFN runs in slices (over 90 latent frames at 22x40) always specialise. Recompiles per block code object are
capped by `torch._dynamo.config.recompile_limit` (8: four frame counts x two block kinds);
past that dynamo runs the block eagerly. Streaming with an unbounded cache is therefore not a
use for it: the softmax blocks' K/V cache grows with every chunk, so every chunk is a new
shape. With a bounded window (`StreamCache.window`) a stream has three chunk shapes (first,
second, steady) times read / commit calls; raise the limit for those, or replay the steady
shape from CUDA graphs (`sanawm.model.graphs`; compiled blocks inside a captured graph are
not measured yet: `scripts/bench_stream_graphs.py --variants compile compile+graphs`).
The fused GDN kernels stay outside the graphs (they are launched eagerly:
`sanawm.ops.gdn.fused` is marked with `torch.compiler.disable`).

The eager model is the reference path; tests hold the compiled blocks equal to it on the CPU
(with a tracing-only backend, since CI has no GPU).
"""

from __future__ import annotations

import torch
from torch import nn

from sanawm.errors import UserInputError

COMPILE_CHOICES = ("default", "tuned")
"""Values of the command line's `--compile [tuned]`."""
TUNED_OPTIONS = {"coordinate_descent_tuning": True}
"""Inductor options of a tuned compile (`apply_fast_paths(..., tune=True)`, `--compile tuned`):
inductor times each fused kernel's launch shapes (block sizes, warps) one at a time on the real
shapes and keeps the fastest. On an H200 at 961 frames it took the compiled forward from 2.860 to
2.810 s and the first call from 24 to 165 s (benchmarks/README.md)."""


def compile_blocks(
    model: nn.Module,
    *,
    backend: str = "inductor",
    mode: str | None = None,
    dynamic: bool = False,
    options: dict | None = None,
) -> nn.Module:
    """Compile every block of `model.blocks` in place (nn.Module.compile) and return `model`.

    backend / mode / dynamic / options go to `torch.compile` ("inductor" and default mode:
    fused Triton kernels on CUDA; "aot_eager" only traces, as the CPU tests use it; options
    are inductor settings such as {"coordinate_descent_tuning": True}, not with `mode`).
    """
    for block in model.blocks:
        block.compile(backend=backend, mode=mode, dynamic=dynamic, options=options)
    return model


def is_compiled(model: nn.Module) -> bool:
    """Whether `compile_blocks` was applied to `model`."""
    return all(getattr(block, "_compiled_call_impl", None) is not None for block in model.blocks)


def fp8_unsupported(device: torch.device | str, dtype: torch.dtype) -> str | None:
    """Why FP8 matmuls (`sanawm.ops.fp8`, `torch._scaled_mm`) cannot run for a model in `dtype`
    on `device`, or None when they can: a CUDA GPU of compute capability 8.9+ (Ada, Hopper and
    later) and a bf16 model."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"--fp8 needs a CUDA GPU of compute capability 8.9+ (Ada / Hopper), not device {device}"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        return f"--fp8 needs a GPU of compute capability 8.9+ (Ada / Hopper); this one is {major}.{minor}"
    if dtype != torch.bfloat16:
        return f"--fp8 needs a bfloat16 model, got {dtype}"
    return None


def attention_unsupported(kernel: str, device: torch.device | str) -> str | None:
    """Why attention kernel `kernel` (one of `ATTENTION_KERNELS`) cannot run on `device`, or None."""
    from sanawm.ops.flash import ATTENTION_KERNELS, flash4_unavailable
    from sanawm.ops.flash3 import flash3_unavailable
    from sanawm.ops.fp8_attention import fp8_attention_unavailable

    if kernel not in ATTENTION_KERNELS:
        return f"--attention must be one of {', '.join(ATTENTION_KERNELS)}, got {kernel!r}"
    unavailable = {"flash4": flash4_unavailable, "fp8": fp8_attention_unavailable, "flash3-fp8": flash3_unavailable}
    reason = unavailable[kernel](device) if kernel in unavailable else None
    return None if reason is None else f"--attention {kernel}: {reason}"


def apply_fast_paths(
    model: nn.Module, *, compile: bool = False, fp8: bool = False, attention: str = "sdpa", tune: bool = False
) -> nn.Module:
    """The opt-in inference fast paths, in place: FP8 block matmuls (`sanawm.ops.fp8`, after any
    dtype change), the softmax attention kernel (`sanawm.ops.flash`), then regional compile
    (`compile_blocks`, inductor; with `tune`, `TUNED_OPTIONS`). Raises UserInputError where FP8
    or the kernel cannot run (see `fp8_unsupported`, `flash4_unavailable`,
    `fp8_attention_unavailable`)."""
    weight = next(model.parameters())
    if attention != "sdpa":
        from sanawm.ops.flash import use_attention_kernel

        reason = attention_unsupported(attention, weight.device)
        if reason is not None:
            raise UserInputError(reason)
        use_attention_kernel(model, attention)
    if fp8:
        from sanawm.ops.fp8 import convert_to_fp8

        reason = fp8_unsupported(weight.device, weight.dtype)
        if reason is not None:
            raise UserInputError(reason)
        convert_to_fp8(model)
    if compile:
        compile_blocks(model, options=TUNED_OPTIONS if tune else None)
    return model


__all__ = [
    "COMPILE_CHOICES",
    "TUNED_OPTIONS",
    "compile_blocks",
    "is_compiled",
    "fp8_unsupported",
    "attention_unsupported",
    "apply_fast_paths",
]
