"""The FFN's SiLU -> 3x3 depthwise conv -> GLU (`sanawm.ops.depthwise_glu`).

CI has no GPU. Here: the reference form (what the CPU runs) against float64 loops, the FFN's
use of it, the custom op under torch.compile, and the Triton kernel itself in Triton's CPU
interpreter (`test_kernel_in_interpreter` re-runs this file with TRITON_INTERPRET=1, which must
be set before triton is imported) against the same float64 loops.
"""

from __future__ import annotations

import pytest
import torch
from _triton_interpreter import HAVE_TRITON, INTERPRETING, build_for_sm90, rerun_interpreted

from sanawm.ops.depthwise_glu import (
    depthwise_glu_op,
    depthwise_glu_reference,
    silu_depthwise_glu,
    silu_depthwise_glu_reference,
)


def inputs(N, H, W, F, dtype, *, bias=True, seed=3):
    g = torch.Generator().manual_seed(seed)
    pre = torch.randn(N, H, W, 2 * F, generator=g, dtype=torch.float64) * 2
    weight = torch.randn(2 * F, 1, 3, 3, generator=g, dtype=torch.float64) * 0.5
    b = torch.randn(2 * F, generator=g, dtype=torch.float64) if bias else None
    return pre.to(dtype), weight.to(dtype), None if b is None else b.to(dtype)


def float64_loops(pre, weight, bias):
    """Independent float64 loops over each pixel's 3x3 neighbourhood (zero outside the frame)."""
    pre, weight = pre.double(), weight.double()
    N, H, W, C2 = pre.shape
    act = pre * torch.sigmoid(pre)
    out = torch.zeros(N, H, W, C2, dtype=torch.float64) + (0 if bias is None else bias.double())
    for y in range(H):
        for x in range(W):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    if 0 <= y + dy < H and 0 <= x + dx < W:
                        out[:, y, x] += act[:, y + dy, x + dx] * weight[:, 0, dy + 1, dx + 1]
    a, g = out[..., : C2 // 2], out[..., C2 // 2 :]
    return a * g * torch.sigmoid(g)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("bias", [True, False])
def test_reference_matches_float64_loops(bias):
    pre, weight, b = inputs(3, 5, 7, 6, torch.float64, bias=bias)
    torch.testing.assert_close(silu_depthwise_glu_reference(pre, weight, b), float64_loops(pre, weight, b),
                               rtol=1e-12, atol=1e-12)  # fmt: skip
    pre, weight, b = inputs(3, 5, 7, 6, torch.bfloat16, bias=bias)
    out = silu_depthwise_glu(pre, weight, b)  # CPU: the reference
    assert out.dtype == torch.bfloat16 and out.shape == (3, 5, 7, 6)
    # bf16 rounding after SiLU, after the conv and at the end: measured 4.3e-3 / 3.7e-3
    assert rel(out, float64_loops(pre, weight, b)) < 1e-2


def test_fused_kernel_only_for_cuda_inference():
    from types import SimpleNamespace

    from sanawm.ops import depthwise_glu

    cuda = SimpleNamespace(is_cuda=True, requires_grad=False)
    trained = SimpleNamespace(requires_grad=True)
    frozen = SimpleNamespace(requires_grad=False)
    have_triton = depthwise_glu.triton is not None
    assert depthwise_glu.fused_kernel_applies(cuda, frozen) == have_triton
    assert not depthwise_glu.fused_kernel_applies(cuda, trained)  # training: no backward in the kernel
    with torch.no_grad():
        assert depthwise_glu.fused_kernel_applies(cuda, trained) == have_triton
    assert not depthwise_glu.fused_kernel_applies(SimpleNamespace(is_cuda=False, requires_grad=False), frozen)


def test_op_under_compile_is_one_node_and_matches_eager():
    """The op takes SiLU(pre) (SiLU stays outside, where inductor fuses it into pre's producer)."""
    pre, weight, b = inputs(2, 4, 5, 8, torch.float32)
    act = torch.nn.functional.silu(pre)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(depthwise_glu_op, backend=backend, fullgraph=True)
    torch.testing.assert_close(compiled(act, weight, b), silu_depthwise_glu_reference(pre, weight, b))
    targets = [n.target for gm in graphs for n in gm.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.sanawm.depthwise_glu.default) == 1
    # Through AOT autograd (as inductor takes it): the fake's shape and strides match the kernel's.
    aot = torch.compile(depthwise_glu_op, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(aot(act, weight, None), depthwise_glu_reference(act, weight, None))
    assert aot(act, weight, None).is_contiguous()


@pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")
@pytest.mark.skipif(INTERPRETING, reason="already in the interpreter")
def test_kernel_in_interpreter():
    rerun_interpreted(__file__)


@pytest.mark.skipif(
    not (HAVE_TRITON and INTERPRETING), reason="runs under TRITON_INTERPRET=1 (test_kernel_in_interpreter)"
)
@pytest.mark.parametrize("bias", [True, False])
def test_interpreted_kernel_matches_float64_loops(bias):
    """Partial pixel and channel blocks (W = 11 over blocks of 8, F = 20 over blocks of 16), the
    frame's edges, and `pre` a strided channel slice of a wider tensor (as the FFN's frame
    slices and token views give it)."""
    from sanawm.ops.depthwise_glu import launch

    pre, weight, b = inputs(2, 4, 11, 20, torch.float32, bias=bias)
    wide = torch.zeros(2, 4, 11, 48)
    wide[..., 3:43] = pre
    strided = wide[..., 3:43]
    exact = float64_loops(pre, weight, b)
    for block_w, block_c in ((8, 16), (32, 64)):
        out = torch.empty(2, 4, 11, 20)
        launch(torch.nn.functional.silu(strided), weight, b, out, block_w=block_w, block_c=block_c)
        err = rel(out, exact)
        assert err < 1e-5, (block_w, block_c, err)  # float32 sums: measured 1.1e-7 / 1.0e-7
    # bf16 in and out (the GPU's case): SiLU rounded, float32 sums rounded once, measured 3.9e-3 / 3.9e-3
    pre, weight, b = inputs(2, 4, 11, 20, torch.bfloat16, bias=bias)
    out = torch.empty(2, 4, 11, 20, dtype=torch.bfloat16)
    launch(torch.nn.functional.silu(pre), weight, b, out)
    assert rel(out, float64_loops(pre, weight, b)) < 1e-2


@pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")
@pytest.mark.skipif(INTERPRETING, reason="compiles, does not interpret")
def test_kernel_compiles_for_sm90():
    """Ahead-of-time build for an H100 / H200 (Triton's own ptxas, no GPU), specialised as the
    FFN launches it (bf16 in and out, 16-byte aligned pointers and strides)."""
    import inspect

    from sanawm.ops.depthwise_glu import BLOCK_C, BLOCK_W, NUM_WARPS, _depthwise_glu_kernel

    strides = [n for n in inspect.signature(_depthwise_glu_kernel.fn).parameters if n.startswith("stride")]
    pointers = {"act": "*bf16", "taps": "*fp32", "bias": "*fp32", "out": "*bf16"}
    compiled = build_for_sm90(_depthwise_glu_kernel, pointers, {"BLOCK_W": BLOCK_W, "BLOCK_C": BLOCK_C}, NUM_WARPS,
                              aligned=strides)  # fmt: skip
    assert compiled.metadata.num_warps == NUM_WARPS and compiled.asm["cubin"]
    ptx = compiled.asm["ptx"]
    assert ".target sm_90" in ptx and "ld.global" in ptx and "st.global" in ptx
