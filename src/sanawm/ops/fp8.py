"""FP8 (e4m3) linear layers for Hopper: per-row activation scales, per-channel weight scales.

    y = (q_x * s_x) @ (q_w * s_w)^T + b

q_x = round_e4m3(x / s_x) with one scale per token row, s_x = amax(|x_row|) / 448; q_w the
same per output channel of the weight (quantised once, at conversion). On CUDA the product
runs as one `torch._scaled_mm` (FP8 tensor cores, fp32 accumulation, bf16 output, both scale
vectors applied in the epilogue); elsewhere `scaled_mm_emulated` computes the same function
from the dequantised operands in float32, which is what the CPU tests check.

`convert_to_fp8(model)` swaps the large matmuls of every DiT block (attention qkv / proj /
output gate / camera output projection, Plücker projection, cross-attention q / proj, and the
FFN's two 1x1 convs) for FP8 modules; everything else (embedders, norms, GDN, softmax
attention, the camera q/k/v projections) stays as it was. FP8 changes results: its error
against bf16 is measured by `scripts/bench_hopper.py` and published in benchmarks/README.md;
it is opt-in. Convert after any `model.to(dtype)`:
`.to` would cast the FP8 buffers too.
"""

from __future__ import annotations

import torch
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


def scaled_mm_emulated(qa: Tensor, qb: Tensor, scale_a: Tensor, scale_b: Tensor, out_dtype: torch.dtype) -> Tensor:
    """What `torch._scaled_mm(qa, qb.t(), scale_a, scale_b.t())` computes, in float32 on any
    device: qa (M, K), qb (N, K) fp8; scale_a (M, 1), scale_b (N, 1)."""
    return ((qa.float() * scale_a) @ (qb.float() * scale_b).t()).to(out_dtype)


def fp8_matmul(x: Tensor, qw: Tensor, w_scale: Tensor, bias: Tensor | None) -> Tensor:
    """x (..., K) @ dequant(qw (N, K))^T + bias, activations quantised per row on the fly."""
    lead = x.shape[:-1]
    qx, x_scale = quantize_rows(x.reshape(-1, x.shape[-1]))
    if x.is_cuda and x.dtype == torch.bfloat16:
        out = torch._scaled_mm(qx, qw.t(), scale_a=x_scale, scale_b=w_scale.t(), out_dtype=torch.bfloat16)
    else:
        out = scaled_mm_emulated(qx, qw, x_scale, w_scale, x.dtype)
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out.reshape(*lead, qw.shape[0])


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


def _fits(out_features: int, in_features: int) -> bool:
    # _scaled_mm wants both matrix sides in multiples of 16.
    return out_features % 16 == 0 and in_features % 16 == 0


def convert_to_fp8(model: nn.Module) -> int:
    """Swap the large matmuls of every block of `model.blocks` for FP8 modules, in place.
    Returns how many modules were swapped. Inference only (no gradients through them)."""
    swapped = 0
    for block in model.blocks:
        targets = [
            (block.attn, "qkv"), (block.attn, "proj"), (block.attn, "output_gate"), (block.attn, "out_proj_cam"),
            (block, "plucker_proj"), (block.cross_attn, "q_linear"), (block.cross_attn, "proj"),
        ]  # fmt: skip
        for parent, name in targets:
            lin = getattr(parent, name)
            if isinstance(lin, nn.Linear) and _fits(lin.out_features, lin.in_features):
                setattr(parent, name, FP8Linear.from_weight(lin.weight, lin.bias))
                swapped += 1
        for holder in (block.mlp.inverted_conv, block.mlp.point_conv):
            conv = holder.conv
            if isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.groups == 1:
                if _fits(conv.out_channels, conv.in_channels):
                    holder.conv = FP8Conv1x1.from_weight(conv.weight.flatten(1), conv.bias)
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
    "convert_to_fp8",
    "dequantized_linear",
]
