"""The camera transform in one pass (`sanawm.ops.ucpe`) and the model's use of it.

CI has no GPU. Here: the reference against float64 math written out from the definition, the
model's kernel path (taken for 16-bit CUDA inference; forced on the CPU, where the op runs the
reference, so the sums-of-squares code around it is what is tested) against its default path,
the custom op's CPU implementation and layout, and the Triton kernel in Triton's CPU
interpreter (`test_kernel_in_interpreter` re-runs this file with TRITON_INTERPRET=1) and built
for sm90 ahead of time.
"""

from __future__ import annotations

import re

import pytest
import torch
from _tiny_models import tiny_camera_dit
from _triton_interpreter import HAVE_TRITON, INTERPRETING, build_for_sm90, rerun_interpreted

from sanawm.ops import ucpe
from sanawm.ops.ucpe import kernel_applies, ucpe_transform_op, ucpe_transform_reference


def inputs(B, H, N, D, dtype, seed=0):
    """x (B, H, N, D), rigid-like 4x4 matrices with translations, RoPE angles of a few turns."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, H, N, D, generator=g, dtype=torch.float64)
    m = torch.randn(B, N, 4, 4, generator=g, dtype=torch.float64)
    m[..., 3, :3] = 0
    m[..., 3, 3] = 1
    angles = 6.0 * torch.rand(N, D // 4, generator=g, dtype=torch.float64)
    return x.to(dtype), m.float(), angles.cos(), angles.sin()


def float64_transform(x, m, cos, sin, inverse):
    """The definition, group by group and pair by pair in float64."""
    x, m = x.double(), m.double()
    D = x.shape[-1]
    out = torch.empty_like(x)
    for grp in range(D // 8):
        c = slice(4 * grp, 4 * grp + 4)
        out[..., c] = torch.einsum("bnij,bhnj->bhni", m, x[..., c])
    s = -sin if inverse else sin
    for p in range(D // 4):
        re, im = x[..., D // 2 + 2 * p], x[..., D // 2 + 2 * p + 1]
        out[..., D // 2 + 2 * p] = re * cos[:, p] - im * s[:, p]
        out[..., D // 2 + 2 * p + 1] = re * s[:, p] + im * cos[:, p]
    return out, x.square().sum(-1), out.square().sum(-1)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("inverse", [False, True])
def test_reference_is_the_definition(inverse):
    x, m, cos, sin = inputs(2, 3, 10, 16, torch.float64)
    out, ss_in, ss_out = ucpe_transform_reference(x, m.double(), cos, sin, inverse)
    for got, want in zip((out, ss_in, ss_out), float64_transform(x, m, cos, sin, inverse)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_kernel_only_for_16_bit_cuda_inference():
    x = torch.zeros(1, 1, 2, 8, dtype=torch.bfloat16)
    assert not kernel_applies(x)  # CPU
    assert not kernel_applies(x.float())


def test_op_cpu_implementation_is_the_reference_in_token_major_layout():
    x, m, cos, sin = inputs(1, 2, 7, 16, torch.float32)
    out, ss_in, ss_out = ucpe_transform_op(x, m, cos.float(), sin.float(), True)
    assert out.stride() == (7 * 2 * 16, 16, 2 * 16, 1)  # (B, N, H, D) memory seen as (B, H, N, D)
    want = float64_transform(x, m, cos, sin, True)
    for got, ref in zip((out, ss_in, ss_out), want):
        assert got.dtype == torch.float32 and rel(got, ref) < 1e-6


def test_op_is_one_node_under_compile():
    """The custom op traces with its fake (shapes, token-major strides) and runs as itself."""
    x, m, cos, sin = inputs(1, 2, 7, 16, torch.float32)
    args = (x, m, cos.float(), sin.float(), False)
    compiled = torch.compile(ucpe_transform_op, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(*args), ucpe_transform_op(*args)):
        assert got.stride() == want.stride() and torch.equal(got, want)


@pytest.mark.parametrize("camera_rms_clamp", [False, True])
def test_model_with_the_camera_kernel_path_matches_the_default(camera_rms_clamp, monkeypatch):
    """The kernel path forced on the CPU runs the op's reference plus the code that uses its sums
    of squares (key inflation, RMS clamps); it must compute what the default path does."""
    model, inputs_ = tiny_camera_dit(camera_rms_clamp=camera_rms_clamp)
    with torch.no_grad():
        ref = model(**inputs_)
        calls = []
        monkeypatch.setattr(ucpe, "kernel_applies", lambda x: calls.append(x.shape) or True)
        out = model(**inputs_)
    assert len(calls) == 2 * len(model.blocks)  # every block: the q / k / v and the output transforms
    assert rel(out, ref) < 1e-5


def test_kernel_in_interpreter():
    if not HAVE_TRITON:
        pytest.skip("triton is not installed")
    rerun_interpreted(__file__)


@pytest.mark.skipif(
    not (HAVE_TRITON and INTERPRETING), reason="runs under TRITON_INTERPRET=1 (test_kernel_in_interpreter)"
)
@pytest.mark.parametrize("inverse", [False, True])
def test_interpreted_kernel_matches_float64(inverse):
    """Head width 112 (padded to 128 in the kernel), two clips of three heads (programs walk
    heads fastest), a partial token block, x head-major or token-major, m a transposed view (as
    queries use it)."""
    from sanawm.ops.ucpe import launch

    x, m, cos, sin = inputs(2, 3, 45, 112, torch.float32, seed=4)
    m_t = m.transpose(-1, -2)
    want = float64_transform(x, m_t, cos, sin, inverse)
    for layout in ("head-major", "token-major"):
        xin = x if layout == "head-major" else x.transpose(1, 2).contiguous().transpose(1, 2)
        out = torch.empty(2, 45, 3, 112).transpose(1, 2)
        ss_in, ss_out = torch.empty(2, 3, 45), torch.empty(2, 3, 45)
        launch(xin, m_t, cos.float(), sin.float(), inverse, out, ss_in, ss_out, block_n=16)
        for got, ref in zip((out, ss_in, ss_out), want):
            assert rel(got, ref) < 1e-6
    xb = x.bfloat16()
    out = torch.empty(2, 3, 45, 112, dtype=torch.bfloat16)
    ss_in, ss_out = torch.empty(2, 3, 45), torch.empty(2, 3, 45)
    launch(xb, m_t, cos.float(), sin.float(), inverse, out, ss_in, ss_out)
    want = float64_transform(xb, m_t, cos, sin, inverse)
    # One bf16 rounding of the result and nothing more: every element within 2^-7 of itself
    # (the interpreter truncates: rel. L2 3.4e-3; the old bound here, 4e-3 in L2, sat 1.2x above it).
    assert ((out.double() - want[0]).abs() <= 2**-7 * want[0].abs() + 1e-6).all()
    assert rel(ss_in, want[1]) < 1e-6 and rel(ss_out, want[2]) < 1e-5


@pytest.mark.skipif(not HAVE_TRITON or INTERPRETING, reason="needs triton, not the interpreter")
def test_kernel_compiles_for_sm90():
    """Ahead-of-time build for an H100 / H200 (Triton's own ptxas, no GPU), bf16 in and out,
    head width 112, the strides 16-divisible as the 2.6B model's are (Triton specialises them so
    at launch): each token's head is read and written in 16-byte vectors, which the kernel's
    speed rests on (the first version, with scalar accesses and another program order, took 3x as
    long)."""
    from sanawm.ops.ucpe import BLOCK_N, NUM_WARPS, _ucpe_kernel

    const = dict(D=112, D_P=128, INVERSE=False, BLOCK_N=BLOCK_N)
    pointers = {"x_ptr": "*bf16", "m_ptr": "*fp32", "cos_ptr": "*fp32", "sin_ptr": "*fp32", "out_ptr": "*bf16",
                "ss_in_ptr": "*fp32", "ss_out_ptr": "*fp32"}  # fmt: skip
    strides = ("x_sb", "x_sh", "x_sn", "o_sb", "o_sh", "o_sn", "m_sb", "m_sn")
    compiled = build_for_sm90(_ucpe_kernel, pointers, const, NUM_WARPS, aligned=strides)
    ptx = compiled.asm["ptx"]
    assert ".target sm_90" in ptx and compiled.asm["cubin"]
    for access in ("ld", "st"):
        assert re.search(rf"\b{access}\.global\S*\.v4\.", ptx), access  # 4 x 32 bits
        assert not re.search(rf"\b{access}\.global\S*\.[bus]16\b", ptx), access  # no 2-byte accesses
