"""The FFN's temporal conv + residual as GEMMs (`sanawm.ops.frame_conv_gemm`).

CI has no GPU, but the op's body is plain PyTorch and runs on the CPU: here it is held to the
reference conv path and to float64 loops (zero frames past both ends of the clip: the centred
conv of a bidirectional chunk), in float64 and in bf16, from one frame up, and under compile.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from sanawm.ops import frame_conv_gemm
from sanawm.ops.frame_conv_gemm import (
    frame_conv_residual,
    frame_conv_residual_gemm,
    frame_conv_residual_op,
    frame_conv_residual_reference,
)


def inputs(B, T, S, C, K, dtype, seed=0):
    """y as the FFN hands it over: a (B, C, T, S) view of (B, T, S, C) memory."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(B, T, S, C, generator=g, dtype=torch.float64)
    weight = torch.randn(C, C, K, 1, generator=g, dtype=torch.float64) / (K * C) ** 0.5
    return tokens.to(dtype).permute(0, 3, 1, 2), weight.to(dtype)


def float64_loops(y, weight):
    """y + conv(y) frame by frame, frames outside 0..T-1 read as zeros -> (B, T, S, C)."""
    y, weight = y.double(), weight.double()
    T, half = y.shape[2], weight.shape[2] // 2
    out = y.permute(0, 2, 3, 1).clone()
    for t in range(T):
        for k in range(weight.shape[2]):
            if 0 <= t + k - half < T:
                out[:, t] += y[:, :, t + k - half].transpose(1, 2) @ weight[:, :, k, 0].T
    return out


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("T", [1, 2, 5])
@pytest.mark.parametrize("K", [3, 5])
def test_gemm_matches_reference_float64(T, K):
    """Frame counts below, at and above the kernel: the edge frames lose the taps that would
    read past the clip (T = 1: the centre tap alone)."""
    y, weight = inputs(2, T, 6, 8, K, torch.float64)
    exact = float64_loops(y, weight)
    out = frame_conv_residual_gemm(y.permute(0, 2, 3, 1), weight)
    assert out.shape == (2, T, 6, 8) and out.is_contiguous()
    torch.testing.assert_close(out, exact, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(frame_conv_residual_reference(y, weight), exact, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("T", [1, 4])
def test_gemm_matches_reference_bf16(T):
    """bf16 in and out: float32 sums, the output rounded after each of the 3 GEMMs (the
    reference: after the conv and after the add). Measured vs float64 at T = 1 / 4: GEMMs
    1.6e-3 / 2.4e-3, reference 1.9e-3 / 2.1e-3; GEMMs vs reference 2.1e-3 / 3.1e-3."""
    y, weight = inputs(1, T, 40, 64, 3, torch.bfloat16, seed=T)
    exact = float64_loops(y, weight)
    out = frame_conv_residual_gemm(y.permute(0, 2, 3, 1), weight)
    ref = frame_conv_residual_reference(y, weight)
    assert out.dtype == torch.bfloat16
    assert rel(out, exact) < 5e-3 and rel(ref, exact) < 5e-3
    assert rel(out, ref) < 6e-3
    # the first and last frames on their own (where zero padding stands in for the missing taps)
    for t in {0, T - 1}:
        assert rel(out[:, t], exact[:, t]) < 5e-3


def test_dispatch_cuda_inference_only():
    cuda = SimpleNamespace(is_cuda=True, requires_grad=False)
    trained = SimpleNamespace(requires_grad=True)
    frozen = SimpleNamespace(requires_grad=False)
    assert frame_conv_gemm.gemm_applies(cuda, frozen)
    assert not frame_conv_gemm.gemm_applies(cuda, trained)  # training: the op has no backward
    with torch.no_grad():
        assert frame_conv_gemm.gemm_applies(cuda, trained)
    assert not frame_conv_gemm.gemm_applies(SimpleNamespace(is_cuda=False, requires_grad=False), frozen)


def test_ffn_temporal_takes_the_op_for_one_chunk_only(monkeypatch):
    """The FFN calls the op (forced here on the CPU) for one chunk without context, and keeps
    the conv for chunk-causal and streaming calls; the results agree with the conv path."""
    from sanawm.model.layers import GLUFeedForward

    torch.manual_seed(0)
    ffn = GLUFeedForward(8, 16, 3).double()
    y, _ = inputs(1, 6, 5, 8, 3, torch.float64)
    calls = []
    with torch.no_grad():
        plain = ffn.temporal(y, None, None)
        monkeypatch.setattr(frame_conv_gemm, "gemm_applies", lambda *a: calls.append(1) or True)
        torch.testing.assert_close(ffn.temporal(y, None, None), plain, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ffn.temporal(y, [0], y[:, :, :0]), plain, rtol=1e-12, atol=1e-12)
        assert len(calls) == 2
        ffn.temporal(y, [0, 3], None)
        ffn.temporal(y, [0], y[:, :, :1])
        assert len(calls) == 2


def test_dispatch_on_cpu_is_the_reference():
    y, weight = inputs(1, 3, 4, 8, 3, torch.float32)
    torch.testing.assert_close(frame_conv_residual(y, weight), frame_conv_residual_reference(y, weight))


def test_op_under_compile_is_one_node_and_matches_eager():
    y, weight = inputs(2, 4, 5, 8, 3, torch.float32)
    x = y.permute(0, 2, 3, 1)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(frame_conv_residual_op, backend=backend, fullgraph=True)
    torch.testing.assert_close(compiled(x, weight), frame_conv_residual_reference(y, weight))
    targets = [n.target for gm in graphs for n in gm.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.sanawm.frame_conv_residual.default) == 1
    # Through AOT autograd (as inductor takes it): the fake's shape and strides match the op's.
    aot = torch.compile(frame_conv_residual_op, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(aot(x, weight), frame_conv_residual_reference(y, weight))
