"""The "flash4" attention path (`sanawm.ops.flash`): layouts, scale, chunk-causal splits and
compile tracing, run on the CPU through the op's float32 implementation and compared with a
float64 softmax and with the model's SDPA path. The CUDA kernel itself (FlashAttention-4) is
held equal to SDPA on the GPU by scripts/bench_attention.py."""

import copy

import pytest
import torch
import torch._dynamo
from _tiny_models import tiny_model_float32_attention

from sanawm.benchmark import make_inputs
from sanawm.model.compile import compile_blocks
from sanawm.ops.flash import attention, flash4_unavailable, use_attention_kernel


def softmax_attention_f64(q, k, v, scale):
    scores = (q.double() @ k.double().transpose(-1, -2)) * scale
    return scores.softmax(-1) @ v.double()


@pytest.mark.parametrize("scale", [None, 128**-0.5])
def test_flash4_path_matches_float64_on_token_major_views(scale):
    g = torch.Generator().manual_seed(0)
    B, H, Nq, Nk, D = 2, 3, 10, 17, 12
    # The model hands over (B, H, N, D) views of (B, N, H * D) token tensors.
    q = torch.randn(B, Nq, H * D, generator=g).unflatten(-1, (H, D)).transpose(1, 2)
    k = torch.randn(B, Nk, H * D, generator=g).unflatten(-1, (H, D)).transpose(1, 2)
    v = torch.randn(B, Nk, H * D, generator=g).unflatten(-1, (H, D)).transpose(1, 2)
    out = attention(q, k, v, scale, "flash4")
    ref = softmax_attention_f64(q, k, v, D**-0.5 if scale is None else scale)
    assert out.shape == (B, H, Nq, D)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attention(q, k, v, scale, "sdpa").double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("frames, chunk_size", [(5, None), (7, 3)])
def test_model_with_flash4_kernel_matches_sdpa(frames, chunk_size):
    model = tiny_model_float32_attention()
    fast = use_attention_kernel(copy.deepcopy(model), "flash4")
    kernels = {m.attention_kernel for m in fast.modules() if hasattr(m, "attention_kernel")}
    assert kernels == {"flash4"} and len(model.config.softmax_blocks) > 0
    inputs = make_inputs(model, (frames, 4, 6), "cpu", torch.float32, 12, torch.Generator().manual_seed(frames))
    with torch.no_grad():
        ref = model(**inputs, chunk_size=chunk_size)
        out = fast(**inputs, chunk_size=chunk_size)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel, op_name", [("flash4", "flash4_attention"), ("fp8", "fp8_attention")])
def test_attention_kernel_op_stays_one_node_under_compile(kernel, op_name):
    torch._dynamo.reset()
    model = use_attention_kernel(tiny_model_float32_attention(), kernel)
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = compile_blocks(copy.deepcopy(model), backend=counting_backend)
    inputs = make_inputs(model, (5, 4, 6), "cpu", torch.float32, 12, torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(**inputs)
        out = compiled(**inputs)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    ops = [n.target for gm in graphs for n in gm.graph.nodes if n.op == "call_function"]
    # Two attentions (main + camera) in the softmax block's graph, each one opaque op call.
    op = getattr(torch.ops.sanawm, op_name).default
    assert sum(t is op for t in ops) == 2
    if kernel == "flash4":
        # q / k / v reach FA4 made token-major (its layout) under compile, so inductor writes
        # them that way from the kernels that produce them (see `sanawm.ops.flash.attention`).
        calls = [n for gm in graphs for n in gm.graph.nodes if n.op == "call_function" and n.target is op]
        assert all(a.op == "call_method" and a.target == "contiguous" for n in calls for a in n.args[:3])
    # Through AOT autograd, as inductor takes it: the op's fake output (shape and strides)
    # must agree with what the kernel returns, or the traced views after it break.
    torch._dynamo.reset()
    aot = compile_blocks(copy.deepcopy(model), backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(aot(**inputs), ref, rtol=1e-5, atol=1e-6)


def test_flash4_is_inference_only():
    q = torch.randn(1, 2, 4, 8, requires_grad=True)
    with pytest.raises(AssertionError, match="inference only"):
        attention(q, q, q, None, "flash4")


def test_flash4_unavailable_off_cuda_says_why():
    assert "CUDA" in flash4_unavailable("cpu")
