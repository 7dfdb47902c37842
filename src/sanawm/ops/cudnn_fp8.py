"""FP8 softmax attention on cuDNN's Hopper SDPA (`sdpa_fp8` of the cuDNN frontend's Python
graph API, `nvidia-cudnn-frontend` on PyPI, over the cuDNN that PyTorch ships).

    out = cudnn_fp8_forward(q, k, v, scale)    # (B, H, N, D) each -> (B, H, Nq, D), q's dtype

Why a second FP8 attention beside FlashAttention-3's (`sanawm.ops.flash3`): FA3 runs head dim
112 in its head-dim-128 kernel; cuDNN takes any head dim that is a multiple of 16 and picks its
own kernel for it. Which one is faster at SANA-WM's shapes is measured by
scripts/bench_fp8_attention.py (benchmarks/README.md).

cuDNN's FP8 graph takes one descale per tensor, so the scales are per tensor (one for all
batches and heads; e4m3 keeps 3 significand bits over 2^-6..448 of that scale, so heads of
different magnitude still round alike unless they are ~2^6 apart):
- q, k, v: `sanawm.ops.flash3.quantize_centred(..., per_tensor=True)`: k and v centred over the
  keys (softmax ignores k's mean; v's mean is added to the output afterwards, as in flash3);
- P: the softmax probabilities (in [0, 1]) times `P_SCALE` = 256, rounded to e4m3, as FA3's
  2^8 (the largest P of a row sits at 256, below e4m3's 448);
- the output is written in q's dtype (bf16 / fp16).

The call is the custom op `sanawm::cudnn_fp8_attention`, opaque under `torch.compile`; the
graph of each shape is built once (`_graph`, cuDNN's heuristics pick the engine) and cached.
On the CPU the op is `sanawm.ops.fp8_attention.emulate` with these scales: the same quantised
math in float32 (tiles of 128 keys; cuDNN's tiles and running-maximum updates differ, which only
moves P's rounding).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from sanawm.ops.flash import sm90_kernel_unavailable
from sanawm.ops.flash3 import quantize_centred
from sanawm.ops.fp8_attention import K_BLOCK, emulate, quantize_e4m3

P_SCALE = 256.0
"""The softmax probabilities are multiplied by this before rounding to e4m3 (cuDNN's scale_s)."""
_P_MAX_LOG2 = 8.0  # log2(P_SCALE), the emulation's form of the same scale

# The graph's tensor ids (any distinct integers).
_Q, _K, _V, _O, _DESCALE_Q, _DESCALE_K, _DESCALE_V, _DESCALE_S, _SCALE_S, _SCALE_O, _AMAX_S, _AMAX_O = range(12)


def cudnn_fp8_unavailable(device: torch.device | str) -> str | None:
    """Why the "cudnn-fp8" kernel cannot run on `device`, or None if it can."""
    return sm90_kernel_unavailable(device, "cudnn-fp8", ("cudnn",), "nvidia-cudnn-frontend")


def _cudnn_type(dtype: torch.dtype):
    import cudnn

    return {torch.float8_e4m3fn: cudnn.data_type.FP8_E4M3, torch.bfloat16: cudnn.data_type.BFLOAT16,
            torch.float16: cudnn.data_type.HALF, torch.float32: cudnn.data_type.FLOAT}[dtype]  # fmt: skip


@functools.lru_cache(maxsize=None)
def _handle(device_index: int):
    import cudnn

    with torch.cuda.device(device_index):
        return cudnn.create_handle()


@functools.lru_cache(maxsize=32)
def _graph(dims_q: tuple, strides_q: tuple, dims_kv: tuple, strides_k: tuple, strides_v: tuple, strides_o: tuple,
           scale: float, out_dtype: torch.dtype, device_index: int):  # fmt: skip
    """The built cuDNN graph for one shape: dims (B, H, N, D) and strides of q, k / v, out."""
    import cudnn

    fp8, f32 = _cudnn_type(torch.float8_e4m3fn), cudnn.data_type.FLOAT
    graph = cudnn.pygraph(io_data_type=fp8, intermediate_data_type=f32, compute_data_type=f32,
                          handle=_handle(device_index))  # fmt: skip
    q = graph.tensor(uid=_Q, dim=dims_q, stride=strides_q, data_type=fp8)
    k = graph.tensor(uid=_K, dim=dims_kv, stride=strides_k, data_type=fp8)
    v = graph.tensor(uid=_V, dim=dims_kv, stride=strides_v, data_type=fp8)
    one = dict(dim=(1, 1, 1, 1), stride=(1, 1, 1, 1), data_type=f32)
    scalars = {uid: graph.tensor(uid=uid, **one) for uid in (_DESCALE_Q, _DESCALE_K, _DESCALE_V, _DESCALE_S, _SCALE_S, _SCALE_O)}
    o, _, amax_s, amax_o = graph.sdpa_fp8(
        q=q, k=k, v=v, descale_q=scalars[_DESCALE_Q], descale_k=scalars[_DESCALE_K], descale_v=scalars[_DESCALE_V],
        descale_s=scalars[_DESCALE_S], scale_s=scalars[_SCALE_S], scale_o=scalars[_SCALE_O],
        generate_stats=False, attn_scale=scale,
    )  # fmt: skip
    # Hopper's FP8 SDPA writes e4m3 only (cuDNN 9.19 declines bf16 / fp16 outputs before Blackwell).
    o.set_uid(_O).set_output(True).set_dim(dims_q).set_stride(strides_o).set_data_type(fp8)
    for t, uid in ((amax_s, _AMAX_S), (amax_o, _AMAX_O)):
        t.set_uid(uid).set_output(True).set_dim((1, 1, 1, 1)).set_stride((1, 1, 1, 1)).set_data_type(f32)
    graph.validate()
    graph.build_operation_graph()
    graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    graph.check_support()
    graph.build_plans()
    return graph


def _bhnd(t: Tensor) -> tuple[tuple, tuple]:
    """Dims and strides of a (B, N, H, D) tensor in cuDNN's (B, H, N, D) order."""
    return tuple(t.shape[i] for i in (0, 2, 1, 3)), tuple(t.stride(i) for i in (0, 2, 1, 3))


@torch.library.custom_op("sanawm::cudnn_fp8_attention", mutates_args=(), device_types="cuda")
def cudnn_fp8_attention(
    q8: Tensor, k8: Tensor, v8: Tensor, q_scale: Tensor, k_scale: Tensor, v_scale: Tensor, scale: float,
    out_dtype: torch.dtype,
) -> Tensor:  # fmt: skip
    """q8 (B, Nq, H, D), k8 / v8 (B, Nk, H, D) e4m3 with last dim contiguous, scales (1,) fp32
    -> (B, Nq, H, D) contiguous in `out_dtype`."""
    import cudnn

    out = torch.empty(q8.shape, device=q8.device, dtype=torch.float8_e4m3fn)
    dims_q, strides_q = _bhnd(q8)
    dims_kv, strides_k = _bhnd(k8)
    device_index = q8.device.index if q8.device.index is not None else torch.cuda.current_device()
    graph = _graph(dims_q, strides_q, dims_kv, strides_k, _bhnd(v8)[1], _bhnd(out)[1], float(scale), out_dtype,
                   device_index)  # fmt: skip
    handle = _handle(device_index)
    cudnn.set_stream(handle=handle, stream=torch.cuda.current_stream(q8.device).cuda_stream)
    constant = lambda value: torch.full((1, 1, 1, 1), value, device=q8.device, dtype=torch.float32)  # noqa: E731
    pack = {
        _Q: q8, _K: k8, _V: v8, _O: out,
        _DESCALE_Q: q_scale.reshape(1, 1, 1, 1), _DESCALE_K: k_scale.reshape(1, 1, 1, 1),
        _DESCALE_V: v_scale.reshape(1, 1, 1, 1),
        # The output is a convex combination of v's rows: |o| <= amax |v|, so v's scale fits it.
        _DESCALE_S: constant(1.0 / P_SCALE), _SCALE_S: constant(P_SCALE), _SCALE_O: (1.0 / v_scale).reshape(1, 1, 1, 1),
        _AMAX_S: torch.empty(1, device=q8.device, dtype=torch.float32),
        _AMAX_O: torch.empty(1, device=q8.device, dtype=torch.float32),
    }  # fmt: skip
    workspace = torch.empty(graph.get_workspace_size(), device=q8.device, dtype=torch.uint8)
    graph.execute(pack, workspace, handle=handle)
    return (out.float() * v_scale).to(out_dtype)


@cudnn_fp8_attention.register_kernel("cpu")
def _cudnn_fp8_attention_cpu(q8, k8, v8, q_scale, k_scale, v_scale, scale, out_dtype):
    q8, k8, v8 = (t.transpose(1, 2) for t in (q8, k8, v8))  # (B, H, N, D)
    (B, H, Nq, D), blocks = q8.shape, -(-k8.shape[2] // K_BLOCK)
    out = emulate(
        q8, k8, v8.transpose(-1, -2), q_scale.reshape(1, 1, 1).expand(B, H, Nq),
        k_scale.reshape(1, 1, 1).expand(B, H, blocks), v_scale.reshape(1, 1, 1).expand(B, H, D), scale,
        torch.float32, p_max_log2=_P_MAX_LOG2,
    )  # fmt: skip
    out = quantize_e4m3(out, v_scale).float() * v_scale  # the kernel's e4m3 output at v's scale
    return out.to(out_dtype).transpose(1, 2).contiguous()  # (B, Nq, H, D), like the kernel and the fake


@cudnn_fp8_attention.register_fake
def _cudnn_fp8_attention_fake(q8, k8, v8, q_scale, k_scale, v_scale, scale, out_dtype):
    return q8.new_empty(q8.shape, dtype=out_dtype)


def cudnn_fp8_forward(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Softmax attention of q (B, H, Nq, D) over k / v (B, H, Nk, D), no mask, in FP8 ->
    (B, H, Nq, D) in q's dtype (a view of a token-major (B, Nq, H, D) tensor)."""
    q8, k8, v8, q_scale, k_scale, v_scale, v_mean = quantize_centred(q, k, v, per_tensor=True)
    q8, k8, v8 = (t.transpose(1, 2) for t in (q8, k8, v8))  # token-major: (B, N, H, D)
    if torch.compiler.is_compiling():
        # As for FA3 / FA4: the op gets the strides traced here, so the kernels that quantise
        # q / k / v write the token-major layout directly.
        q8, k8, v8 = (t.contiguous() for t in (q8, k8, v8))
    else:
        q8, k8, v8 = (t if t.stride(-1) == 1 else t.contiguous() for t in (q8, k8, v8))
    out = cudnn_fp8_attention(q8, k8, v8, q_scale, k_scale, v_scale, scale, q.dtype)  # (B, Nq, H, D)
    return (out.float() + v_mean.transpose(1, 2)).to(q.dtype).transpose(1, 2)


__all__ = ["P_SCALE", "cudnn_fp8_unavailable", "cudnn_fp8_attention", "cudnn_fp8_forward"]
