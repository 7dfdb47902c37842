"""FP8 (e4m3) linear layers for Hopper: per-row activation scales, per-channel weight scales.

    y = (q_x * s_x) @ (q_w * s_w)^T + b

q_x = round_e4m3(x / s_x) with one scale per token row, s_x = amax(|x_row|) / 448; q_w the
same per output channel of the weight (quantised once, at conversion). On CUDA the product
runs as one `torch._scaled_mm` (FP8 tensor cores, fp32 accumulation, bf16 output, both scale
vectors applied in the epilogue); elsewhere `scaled_mm_emulated` computes the same function
from the dequantised operands in float32, which is what the CPU tests check.

`convert_to_fp8(model)` swaps the large matmuls of every DiT block (attention qkv and output
gate, Plücker projection, cross-attention q / proj, the FFN's two 1x1 convs and its temporal
conv) for FP8 modules; everything else (embedders, norms, GDN, softmax attention) stays as it
was. Left out on purpose, by measurement (scripts/check_fp8_modules.py, benchmarks/README.md):
the attention output projection and the camera branch's output projection, which carry most
of the FP8 error (the public tiny checkpoint: 4.0e-2 from the reference's output with them in
FP8, 1.4e-2 without), and the camera q / k / v (tried: less than 1 % of the forward's time for
~20 % more velocity error). FP8 changes results: its error
against bf16 is measured by `scripts/bench_hopper.py` and published in benchmarks/README.md;
it is opt-in. Convert after any `model.to(dtype)`:
`.to` would cast the FP8 buffers too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FP8_DTYPE = torch.float8_e4m3fn
E4M3_MAX = 448.0
# Rows that are all zero get this amax, so their scale is finite and they quantise to zeros.
_MIN_AMAX = 1e-12


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """x (M, K) -> (q (M, K) float8_e4m3fn, scale (M, 1) float32) with x ~= q * scale."""
    x32 = x.float()
    scale = x32.abs().amax(dim=-1, keepdim=True).clamp_min(_MIN_AMAX) / E4M3_MAX
    q = (x32 / scale).clamp(-E4M3_MAX, E4M3_MAX).to(FP8_DTYPE)
    return q, scale


def scaled_mm_emulated(
    qa: Tensor, qb: Tensor, scale_a: Tensor, scale_b: Tensor, out_dtype: torch.dtype, bias: Tensor | None = None
) -> Tensor:
    """What `torch._scaled_mm(qa, qb.t(), scale_a, scale_b.t(), bias)` computes, in float32 on
    any device: qa (M, K), qb (N, K) fp8; scale_a (M, 1), scale_b (N, 1); bias (N,) added before
    the one rounding to `out_dtype`."""
    out = (qa.float() * scale_a) @ (qb.float() * scale_b).t()
    return (out if bias is None else out + bias.float()).to(out_dtype)


def fp8_matmul(x: Tensor, qw: Tensor, w_scale: Tensor, bias: Tensor | None) -> Tensor:
    """x (..., K) @ dequant(qw (N, K))^T + bias, activations quantised per row on the fly."""
    lead = x.shape[:-1]
    qx, x_scale = quantize_rows(x.reshape(-1, x.shape[-1]))
    return _scaled_product(qx, x_scale, qw, w_scale, bias, x).reshape(*lead, qw.shape[0])


def _scaled_product(qx: Tensor, x_scale: Tensor, qw: Tensor, w_scale: Tensor, bias: Tensor | None, x: Tensor) -> Tensor:
    """(qx * x_scale) @ (qw * w_scale)^T + bias in x's dtype: `torch._scaled_mm` for bf16 on
    CUDA, `scaled_mm_emulated` elsewhere. The bias is added in the matmul's epilogue, before the
    output is rounded: as a separate add it is one more pass over the output wherever inductor
    finds no consumer to fuse it into (an H200 profile showed one of ~0.66 ms per call after an
    FP8 q / k / v projection at 961 frames)."""
    bias = None if bias is None else bias.to(x.dtype)
    if x.is_cuda and x.dtype == torch.bfloat16:
        return torch._scaled_mm(qx, qw.t(), scale_a=x_scale, scale_b=w_scale.t(), bias=bias, out_dtype=torch.bfloat16)
    return scaled_mm_emulated(qx, qw, x_scale, w_scale, x.dtype, bias)


class FP8Linear(nn.Module):
    """Inference-only stand-in for an nn.Linear with its weight in FP8 (per-channel scales)."""

    def __init__(self, qweight: Tensor, weight_scale: Tensor, bias: Tensor | None, weight_dtype: torch.dtype):
        super().__init__()
        self.out_features, self.in_features = qweight.shape
        self.weight_dtype = weight_dtype
        self.register_buffer("qweight", qweight)
        self.register_buffer("weight_scale", weight_scale)
        self.register_buffer("bias", bias)

    @classmethod
    def from_weight(cls, weight: Tensor, bias: Tensor | None) -> FP8Linear:
        q, scale = quantize_rows(weight.detach())
        return cls(q, scale, None if bias is None else bias.detach().clone(), weight.dtype)

    @property
    def weight(self) -> Tensor:
        """The dequantised weight (N, K) in the original dtype (callers read `.weight.dtype`)."""
        return (self.qweight.float() * self.weight_scale).to(self.weight_dtype)

    def forward(self, x: Tensor) -> Tensor:
        return fp8_matmul(x, self.qweight, self.weight_scale, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8=e4m3"


class FP8Conv1x1(FP8Linear):
    """A 1x1 Conv2d (N, C_in, H, W) -> (N, C_out, H, W) as an FP8 matmul over channels.

    The output is an NCHW-shaped view of a channels-last tensor (no transpose copy); the
    FFN's depthwise conv and GLU take that layout as it is."""

    @property
    def out_channels(self) -> int:
        return self.out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_rows(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward_rows(self, x: Tensor) -> Tensor:
        """The same conv on channels-last rows (..., C_in) -> (..., C_out) (the FFN's token layout)."""
        return super().forward(x)


def quantize_frame_stacks(x: Tensor, taps: int) -> tuple[Tensor, Tensor]:
    """x (B, T, S, C) -> the rows of a centred `taps`-frame conv's stacked input, quantised:
    q (B * T * S, taps * C) e4m3 holding [x[t - taps // 2], ..., x[t + taps // 2]] of each
    token (zeros past either end of the clip), scale (B * T * S, 1) float32. One scale per row
    (_scaled_mm takes one): the largest of its frames' amaxes, so each frame's slice of the
    row is quantised on the scale of the loudest of the three."""
    B, T, S, C = x.shape
    half = taps // 2
    amax = F.pad(x.abs().amax(dim=-1, keepdim=True).float(), (0, 0, 0, 0, half, half))
    shared = torch.stack([amax[:, k : k + T] for k in range(taps)]).amax(dim=0)
    scale = shared.clamp_min(_MIN_AMAX) / E4M3_MAX
    padded = F.pad(x, (0, 0, 0, 0, half, half))
    stacked = torch.cat([padded[:, k : k + T] for k in range(taps)], dim=-1)
    q = (stacked.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(FP8_DTYPE)
    return q.reshape(-1, taps * C), scale.reshape(-1, 1)


class FP8FrameConv(nn.Module):
    """Inference-only stand-in for the FFN's temporal conv (an nn.Conv2d (C, C, K, 1) along
    frames, centred, no bias): its K taps side by side as one FP8 weight (C_out, K * C_in)
    with per-output-channel scales.

    `residual(x)` gives x + conv(x) for frames that form one chunk with no carried context
    (a bidirectional clip: the stage-1 forward) as one FP8 matmul over the frame-stacked rows
    of `quantize_frame_stacks`. Chunk-causal and streaming calls take `.weight`, the
    dequantised kernel, through the model's bf16 conv."""

    def __init__(self, qweight: Tensor, weight_scale: Tensor, kernel_size: tuple[int, int], weight_dtype: torch.dtype):
        super().__init__()
        self.kernel_size = kernel_size
        self.weight_dtype = weight_dtype
        self.register_buffer("qweight", qweight)
        self.register_buffer("weight_scale", weight_scale)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> FP8FrameConv:
        w = conv.weight.detach()
        taps = w[..., 0].permute(0, 2, 1).reshape(w.shape[0], -1)  # (C_out, K * C_in), tap-major
        q, scale = quantize_rows(taps)
        return cls(q, scale, tuple(conv.kernel_size), w.dtype)

    @property
    def weight(self) -> Tensor:
        """The dequantised kernel (C_out, C_in, K, 1) in the original dtype."""
        c_out, k = self.qweight.shape[0], self.kernel_size[0]
        taps = (self.qweight.float() * self.weight_scale).to(self.weight_dtype)
        return taps.reshape(c_out, k, -1).permute(0, 2, 1)[..., None]

    def residual(self, x: Tensor) -> Tensor:
        """x (B, T, S, C), one chunk, no context -> x + conv(x) along T, (B, T, S, C)."""
        q, scale = quantize_frame_stacks(x, self.kernel_size[0])
        out = _scaled_product(q, scale, self.qweight, self.weight_scale, None, x)
        return x + out.reshape(x.shape)

    def extra_repr(self) -> str:
        return f"{self.qweight.shape[0]}, kernel_size={self.kernel_size}, fp8=e4m3"


def _fits(out_features: int, in_features: int) -> bool:
    # _scaled_mm wants both matrix sides in multiples of 16.
    return out_features % 16 == 0 and in_features % 16 == 0


# The matmul families of a block that can run in FP8: name -> the (parent, attribute) slots
# of one block. Linears and 1x1 convs become FP8Linear / FP8Conv1x1, the temporal conv
# FP8FrameConv.
FP8_FAMILIES: dict[str, Callable[[nn.Module], list[tuple[nn.Module, str]]]] = {
    "attention qkv": lambda b: [(b.attn, "qkv")],
    "attention proj": lambda b: [(b.attn, "proj")],
    "output gate": lambda b: [(b.attn, "output_gate")],
    "camera out proj": lambda b: [(b.attn, "out_proj_cam")],
    "Plucker proj": lambda b: [(b, "plucker_proj")],
    "cross-attention q / proj": lambda b: [(b.cross_attn, "q_linear"), (b.cross_attn, "proj")],
    "FFN 1x1 in": lambda b: [(b.mlp.inverted_conv, "conv")],
    "FFN 1x1 out": lambda b: [(b.mlp.point_conv, "conv")],
    "temporal conv": lambda b: [(b.mlp, "t_conv")],
}
# What `convert_to_fp8` converts by default: all but the two output projections, which carry
# most of the FP8 error (scripts/check_fp8_modules.py).
DEFAULT_FP8_FAMILIES = tuple(f for f in FP8_FAMILIES if f not in ("attention proj", "camera out proj"))


def _to_fp8(module: nn.Module) -> nn.Module | None:
    """The FP8 stand-in for a block matmul, or None where there is none (shape, kind)."""
    if isinstance(module, nn.Linear) and _fits(module.out_features, module.in_features):
        return FP8Linear.from_weight(module.weight, module.bias)
    if not isinstance(module, nn.Conv2d) or module.groups != 1:
        return None
    if module.kernel_size == (1, 1) and _fits(module.out_channels, module.in_channels):
        return FP8Conv1x1.from_weight(module.weight.flatten(1), module.bias)
    kernel = module.kernel_size
    if kernel[0] > 1 and kernel[1] == 1 and module.bias is None and _fits(module.out_channels, module.in_channels * kernel[0]):
        return FP8FrameConv.from_conv(module)  # the FFN's temporal conv
    return None


def check_fp8_families(families: Sequence[str]) -> None:
    """Raise ValueError naming the entries of `families` that are not in `FP8_FAMILIES`."""
    unknown = set(families) - set(FP8_FAMILIES)
    if unknown:
        raise ValueError(f"unknown FP8 families {sorted(unknown)}; known: {', '.join(FP8_FAMILIES)}")


def convert_to_fp8(model: nn.Module, families: Sequence[str] = DEFAULT_FP8_FAMILIES) -> int:
    """Swap the matmuls of `families` (names of `FP8_FAMILIES`) in every block of
    `model.blocks` for FP8 modules, in place. Returns how many modules were swapped.
    Inference only (no gradients through them)."""
    check_fp8_families(families)
    swapped = 0
    for block in model.blocks:
        for family in families:
            for parent, name in FP8_FAMILIES[family](block):
                fp8 = _to_fp8(getattr(parent, name))
                if fp8 is not None:
                    setattr(parent, name, fp8)
                    swapped += 1
    return swapped


def dequantized_linear(x: Tensor, module: FP8Linear) -> Tensor:
    """float64 reference of an FP8 module's output (tests): dequantised operands, exact sums."""
    qx, sx = quantize_rows(x.reshape(-1, x.shape[-1]))
    w = module.qweight.double() * module.weight_scale.double()
    out = (qx.double() * sx.double()) @ w.t()
    if module.bias is not None:
        out = out + module.bias.double()
    return out.reshape(*x.shape[:-1], -1)


__all__ = [
    "FP8_DTYPE",
    "E4M3_MAX",
    "quantize_rows",
    "scaled_mm_emulated",
    "fp8_matmul",
    "FP8Linear",
    "FP8Conv1x1",
    "FP8FrameConv",
    "quantize_frame_stacks",
    "FP8_FAMILIES",
    "DEFAULT_FP8_FAMILIES",
    "check_fp8_families",
    "convert_to_fp8",
    "dequantized_linear",
]
