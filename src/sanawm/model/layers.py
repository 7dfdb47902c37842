"""Small building blocks: norms, embedders, cross-attention, the FFN and the final layer.

Tokens travel as (B, T, S, C): batch, latent frames, S = H*W tokens per frame, channels.
Parameter names follow the public checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sanawm.ops.depthwise_glu import silu_depthwise_glu
from sanawm.ops.fp8 import FP8Conv1x1, FP8FrameConv
from sanawm.ops.frame_conv_gemm import frame_conv_residual
from sanawm.ops.temporal import frame_conv_channels_first

if TYPE_CHECKING:
    from sanawm.parallel.sequence import RowShard

LAYER_NORM_EPS = 1e-6  # the affine-free LayerNorms before attention, FFN and output

# Largest element count of one conv call: PyTorch's conv kernels index with int32, so very
# long clips are run through the FFN's spatial convs a few frames at a time (which also
# bounds the peak memory of the FFN's 2F-wide intermediates).
_MAX_CONV_ELEMENTS = 1 << 30


def at_least_f32(x: Tensor) -> Tensor:
    """x in float32, or kept in float64 (the precision-critical parts run in float32)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class RMSNorm(nn.Module):
    """RMSNorm over the last dim, computed in float32 (result in the input dtype)."""

    def __init__(self, dim: int, eps: float, init: float = 1.0, device=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.full((dim,), float(init), device=device))

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == self.weight.dtype and x.dtype in (torch.float32, torch.float64):
            # PyTorch's fused kernel: the same float32 sums bit for bit, a fifth faster on the CPU.
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        x32 = at_least_f32(x)
        normed = x32 * torch.rsqrt(x32.square().mean(dim=-1, keepdim=True) + self.eps)
        return (self.weight * normed).to(x.dtype)


def layer_norm(x: Tensor) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=LAYER_NORM_EPS)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class PatchEmbed(nn.Module):
    """Per-pixel linear embedding of a (B, C_in, T, H, W) volume (a 1x1x1 Conv3d) -> (B, T, S, C)."""

    def __init__(self, in_channels: int, hidden: int, device=None):
        super().__init__()
        self.proj = nn.Conv3d(in_channels, hidden, kernel_size=1, device=device)

    def forward(self, x: Tensor) -> Tensor:
        w = self.proj.weight.flatten(1)  # (C, C_in)
        tokens = torch.einsum("bcthw,oc->bthwo", x, w) + self.proj.bias
        return tokens.flatten(2, 3)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features (256, cos then sin) of the 0..1000 timestep -> MLP."""

    FREQ_DIM = 256

    def __init__(self, hidden: int, device=None):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(self.FREQ_DIM, hidden, device=device), nn.SiLU(), nn.Linear(hidden, hidden, device=device)
        )

    @staticmethod
    def sinusoid(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[..., None] * freqs
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(self.sinusoid(t, self.FREQ_DIM).to(self.mlp[0].weight.dtype))


class _Mlp(nn.Module):
    def __init__(self, in_dim: int, hidden: int, device=None):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden, device=device)
        self.fc2 = nn.Linear(hidden, hidden, device=device)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class CaptionEmbedder(nn.Module):
    """Text hidden states -> model width. `y_embedding` is the learned null caption
    (max_text_len x caption_channels) the sampler uses for the unconditional branch."""

    def __init__(self, caption_channels: int, hidden: int, max_text_len: int, device=None):
        super().__init__()
        self.y_proj = _Mlp(caption_channels, hidden, device=device)
        self.register_buffer("y_embedding", torch.zeros(max_text_len, caption_channels, device=device))

    def forward(self, text: Tensor) -> Tensor:
        return self.y_proj(text)


class CrossAttention(nn.Module):
    """Multi-head attention from video tokens to text tokens, RMS-normalised q and k."""

    def __init__(self, hidden: int, num_heads: int, norm_eps: float, device=None):
        super().__init__()
        self.num_heads = num_heads
        self.q_linear = nn.Linear(hidden, hidden, device=device)
        self.kv_linear = nn.Linear(hidden, 2 * hidden, device=device)
        self.proj = nn.Linear(hidden, hidden, device=device)
        self.q_norm = RMSNorm(hidden, norm_eps, device=device)
        self.k_norm = RMSNorm(hidden, norm_eps, device=device)

    def forward(self, x: Tensor, text: Tensor, text_bias: Tensor | None) -> Tensor:
        """x (B, T, S, C); text (B, L, C); text_bias (B, 1, 1, L) additive logit bias or None."""
        B, T, S, C = x.shape
        h = self.num_heads
        q = self.q_norm(self.q_linear(x)).reshape(B, T * S, h, C // h).transpose(1, 2)
        k, v = self.kv_linear(text).chunk(2, dim=-1)
        k = self.k_norm(k).unflatten(-1, (h, C // h)).transpose(1, 2)
        v = v.unflatten(-1, (h, C // h)).transpose(1, 2)
        bias = text_bias.to(q.dtype) if text_bias is not None else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(B, T, S, C))


def text_logit_bias(mask: Tensor) -> Tensor:
    """(B, L) 0/1 text mask -> additive bias (B, 1, 1, L): 0 on tokens, -10000 on padding
    (the reference's value; exp(-10000) underflows to 0, so padding gets no weight)."""
    return ((1.0 - mask.float()) * -10000.0)[:, None, None, :]


class _ConvLayer(nn.Module):
    """A Conv2d held as `.conv` (the checkpoint's naming)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv


class GLUFeedForward(nn.Module):
    """GLUMBConv with a temporal conv: per frame 1x1 conv (C -> 2F, SiLU), 3x3 depthwise
    conv, GLU (a * SiLU(g)), 1x1 conv (F -> C); then y + t_conv(y) along frames."""

    def __init__(self, hidden: int, ffn_hidden: int, t_kernel: int, device=None):
        super().__init__()
        two_f = 2 * ffn_hidden
        self.inverted_conv = _ConvLayer(nn.Conv2d(hidden, two_f, 1, device=device))
        self.depth_conv = _ConvLayer(nn.Conv2d(two_f, two_f, 3, padding=1, groups=two_f, device=device))
        self.point_conv = _ConvLayer(nn.Conv2d(ffn_hidden, hidden, 1, bias=False, device=device))
        self.t_conv = nn.Conv2d(hidden, hidden, (t_kernel, 1), padding=(t_kernel // 2, 0), bias=False, device=device)

    @property
    def context_frames(self) -> int:
        """Frames of spatial output a later chunk needs from earlier ones."""
        return self.t_conv.kernel_size[0] // 2

    def _spatial(self, x: Tensor, zero_rows: tuple[int, int] | None = None) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W). `zero_rows` (sequence parallelism): x also holds the
        rows next to its band that exist, one above and / or below; the depthwise conv
        zero-pads (rows above, rows below) and reads no further."""
        x = F.silu(self.inverted_conv.conv(x))
        conv = self.depth_conv.conv
        if zero_rows is None:
            x = conv(x)
        else:
            x = F.conv2d(F.pad(x, (1, 1, *zero_rows)), conv.weight, conv.bias, groups=conv.groups)
        a, g = x.chunk(2, dim=1)
        return self.point_conv.conv(a * F.silu(g))

    def spatial(self, x: Tensor, height: int, width: int, halo: RowShard | None = None) -> Tensor:
        """Per-frame part: x (B, T, S, C) -> (B, C, T, S). With `halo` (sequence
        parallelism), x holds a band of `height` rows of each frame and the neighbouring
        bands' edge rows come from the other ranks (the NCHW convs, `_spatial`); otherwise
        the token-layout path `_spatial_tokens`."""
        if halo is None:
            return self._spatial_tokens(x, height, width)
        B, T, S, C = x.shape
        frames, zero_rows = halo.with_neighbour_rows(x.reshape(B * T, height, width, C).permute(0, 3, 1, 2))
        pixels = frames.shape[-2] * frames.shape[-1]
        step = max(1, _MAX_CONV_ELEMENTS // (self.inverted_conv.conv.out_channels * pixels))
        if B * T <= step:  # one call; also keeps the frame count symbolic under torch.compile
            y = self._spatial(frames, zero_rows)
        else:
            y = torch.cat([self._spatial(frames[i : i + step], zero_rows) for i in range(0, B * T, step)], dim=0)
        return y.reshape(B, T, C, S).transpose(1, 2)

    def _spatial_tokens(self, x: Tensor, height: int, width: int) -> Tensor:
        """`spatial` in the token layout: the 1x1 convs as matmuls on (..., C) rows, the
        depthwise conv on the channels-last view, and the output a (B, C, T, S) view of
        (B, T, S, C) memory; no transposing copies. Same sums as the NCHW convs (tests hold
        the two together). Long clips go through in frame slices, as on the NCHW path: that
        bounds the 2F-wide intermediates (peak memory) and the conv's int32 index range."""
        B, T, S, C = x.shape
        rows = x.reshape(B * T, S, C)
        step = max(1, _MAX_CONV_ELEMENTS // (self.inverted_conv.conv.out_channels * S))
        if B * T <= step:  # one call; also keeps the frame count symbolic under torch.compile
            y = self._frames_tokens(rows, height, width)
        else:
            y = torch.cat([self._frames_tokens(rows[i : i + step], height, width) for i in range(0, B * T, step)])
        return y.reshape(B, T, S, C).permute(0, 3, 1, 2)

    def _frames_tokens(self, rows: Tensor, height: int, width: int) -> Tensor:
        """(N, S, C) frames -> (N, S, C): the per-frame FFN in the token layout."""
        N, S, C = rows.shape
        pre = _pointwise_conv(self.inverted_conv.conv, rows).reshape(N, height, width, -1)
        conv = self.depth_conv.conv
        glu = silu_depthwise_glu(pre, conv.weight, conv.bias)  # SiLU, 3x3 depthwise, GLU (one kernel on CUDA)
        return _pointwise_conv(self.point_conv.conv, glu).reshape(N, S, C)

    def temporal(self, y: Tensor, chunk_starts: Sequence[int] | None, context: Tensor | None) -> Tensor:
        """y (B, C, T, S) -> y + t_conv(y) as (B, T, S, C). One chunk without context (a
        bidirectional clip) goes through `frame_conv_residual` (cuBLAS GEMMs on CUDA)."""
        one_chunk = chunk_starts is None or len(chunk_starts) == 1
        if one_chunk and (context is None or context.shape[2] == 0):
            if isinstance(self.t_conv, FP8FrameConv):  # after `convert_to_fp8`: one FP8 matmul
                return self.t_conv.residual(y.permute(0, 2, 3, 1))
            return frame_conv_residual(y, self.t_conv.weight)
        out = y + frame_conv_channels_first(y, self.t_conv.weight, chunk_starts=chunk_starts, context=context)
        return out.permute(0, 2, 3, 1)


def _pointwise_conv(conv: nn.Module, rows: Tensor) -> Tensor:
    """A 1x1 conv (nn.Conv2d, or `sanawm.ops.fp8.FP8Conv1x1`) applied to channels-last rows
    (..., C_in) -> (..., C_out): one matmul, no layout change."""
    if isinstance(conv, FP8Conv1x1):
        return conv.forward_rows(rows)
    return F.linear(rows, conv.weight.flatten(1), conv.bias)


class FinalLayer(nn.Module):
    """LayerNorm, per-frame shift/scale from the timestep embedding, linear to latent channels."""

    def __init__(self, hidden: int, out_channels: int, device=None):
        super().__init__()
        self.linear = nn.Linear(hidden, out_channels, device=device)
        self.scale_shift_table = nn.Parameter(torch.zeros(2, hidden, device=device))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """x (B, T, S, C); t (B, T, C) timestep embedding -> (B, T, S, C_out)."""
        shift, scale = (self.scale_shift_table + t[:, :, None, :]).unbind(dim=2)
        return self.linear(modulate(layer_norm(x), shift[:, :, None], scale[:, :, None]))


__all__ = [
    "at_least_f32",
    "RMSNorm",
    "layer_norm",
    "modulate",
    "PatchEmbed",
    "TimestepEmbedder",
    "CaptionEmbedder",
    "CrossAttention",
    "text_logit_bias",
    "GLUFeedForward",
    "FinalLayer",
]
