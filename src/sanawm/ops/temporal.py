"""Convolutions along the frame axis, with chunk boundaries and carried context.

`key_conv`: the depthwise short conv on GDN keys. The weight is a causal kernel
(w_0 .. w_{K-1}, w_{K-1} on the current frame); the bidirectional form runs it forward and on
the time-reversed sequence and counts the shared centre tap once:
    y[t] = sum_i w_i x[t-K+1+i]  +  sum_i w_i x[t+K-1-i]  -  w_{K-1} x[t].
The forward part sees earlier chunks (and `context`, the frames before the first one); the
backward part only sees frames of the same chunk.

`frame_conv_channels_first`: the FFN's dense temporal conv (kernel 3 centred): each frame reads the previous
frame (even across a chunk boundary, or `context` before the first frame) and the next frame
only inside its chunk.

Layouts differ on purpose and the names say so: `key_conv` works on the model's token layout
(B, T, S, C) (T frames of S tokens of C channels), `frame_conv_channels_first` on the
channels-first layout (B, C, T, S) that the FFN's 2D convs already use.
Chunks and chunk starts: `sanawm.chunks`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sanawm.chunks import chunk_spans


def key_conv(
    x: Tensor,
    weight: Tensor,
    *,
    chunk_starts: Sequence[int] | None = None,
    context: Tensor | None = None,
) -> Tensor:
    """Bidirectional depthwise conv along frames.

    x: (B, T, S, C); weight: (C, K) causal taps; context: (B, P, S, C) frames preceding x
    (P >= K-1 is not required: missing frames count as zeros). Returns (B, T, S, C) in x's
    dtype; sums are taken in float32 (or float64) so bf16 inputs lose nothing extra.

    A float32 CPU call over one chunk (every streaming call) runs as one depthwise conv
    (`_key_conv_one_chunk`); everything else tap by tap (`key_conv_taps`).
    """
    one_chunk = chunk_starts is None or len(chunk_starts) == 1
    if one_chunk and x.is_cpu and x.dtype == torch.float32 and weight.dtype == torch.float32:
        return _key_conv_one_chunk(x, weight, context)
    return key_conv_taps(x, weight, chunk_starts=chunk_starts, context=context)


def key_conv_taps(
    x: Tensor,
    weight: Tensor,
    *,
    chunk_starts: Sequence[int] | None = None,
    context: Tensor | None = None,
) -> Tensor:
    """`key_conv` tap by tap: a multiply-add per tap and chunk (the reference form)."""
    out_dtype = x.dtype
    work = torch.promote_types(x.dtype, torch.float32)
    x, weight = x.to(work), weight.to(work)
    context = context.to(work) if context is not None else None
    T = x.shape[1]
    K = weight.shape[-1]
    if context is not None and context.shape[1] > 0:
        full = torch.cat([context, x], dim=1)
    else:
        full = x
    lead = full.shape[1] - T
    padded = F.pad(full, (0, 0, 0, 0, K - 1, 0))  # zeros before the first known frame
    out = torch.zeros_like(x)
    for i in range(K):
        # causal tap i reads frame t-K+1+i
        start = lead + i
        out.addcmul_(padded[:, start : start + T], weight[:, i])
    for start, end in chunk_spans(chunk_starts, T):
        seg = F.pad(x[:, start:end], (0, 0, 0, 0, 0, K - 1))  # zeros after the chunk's last frame
        n = end - start
        for i in range(K - 1):  # tap K-1 (the centre) is already counted by the forward pass
            shift = K - 1 - i
            out[:, start:end].addcmul_(seg[:, shift : shift + n], weight[:, i])
    return out.to(out_dtype)


def _key_conv_one_chunk(x: Tensor, weight: Tensor, context: Tensor | None) -> Tensor:
    """`key_conv` of frames that form one chunk: with the future taps mirrored, the two passes
    are one depthwise conv of kernel 2K-1 over [zeros / context (K-1 frames), x, K-1 zeros].
    The token layout (B, L, S, C) read as (B, C, L, S) is channels-last, which oneDNN's
    depthwise conv takes as it is (no transposing copy either way)."""
    B, T, S, C = x.shape
    K = weight.shape[-1]
    if K == 1:
        return x * weight[:, 0]
    past = context[:, max(0, context.shape[1] - (K - 1)) :] if context is not None else x[:, :0]
    parts = [x.new_zeros(B, K - 1 - past.shape[1], S, C)] if past.shape[1] < K - 1 else []
    full = torch.cat(parts + [past.to(x.dtype), x, x.new_zeros(B, K - 1, S, C)], dim=1)
    taps = torch.cat([weight, weight[:, :-1].flip(-1)], dim=1)  # frame offsets -(K-1) .. K-1
    out = F.conv2d(full.permute(0, 3, 1, 2), taps[:, None, :, None], groups=C)
    return out.permute(0, 2, 3, 1)


def frame_conv_channels_first(
    x: Tensor,
    weight: Tensor,
    *,
    chunk_starts: Sequence[int] | None = None,
    context: Tensor | None = None,
) -> Tensor:
    """Dense centred conv along frames.

    x: (B, C, T, S); weight: (C_out, C_in, K, 1) with odd K; context: (B, C_in, P, S) frames
    preceding x (zeros if None). Returns (B, C_out, T, S).

    Frames of one chunk (a bidirectional clip, every streaming call) take one conv in x's
    memory layout (`_frame_conv_one_chunk`); several chunks go chunk by chunk.
    """
    if chunk_starts is None or len(chunk_starts) == 1:
        return _frame_conv_one_chunk(x, weight, context)
    return frame_conv_by_chunk(x, weight, chunk_starts=chunk_starts, context=context)


def frame_conv_by_chunk(
    x: Tensor,
    weight: Tensor,
    *,
    chunk_starts: Sequence[int] | None = None,
    context: Tensor | None = None,
) -> Tensor:
    """`frame_conv_channels_first` one chunk at a time (the reference form)."""
    half = weight.shape[2] // 2
    T = x.shape[2]
    full = torch.cat([context, x], dim=2) if context is not None else x
    lead = full.shape[2] - T
    outs = []
    for start, end in chunk_spans(chunk_starts, T):
        # earlier frames (any chunk, or the context) are visible on the left ...
        left = full[:, :, max(0, lead + start - half) : lead + start]
        seg = torch.cat([F.pad(left, (0, 0, half - left.shape[2], 0)), x[:, :, start:end]], dim=2)
        # ... but the next chunk is not visible on the right
        seg = F.pad(seg, (0, 0, 0, half))
        outs.append(F.conv2d(seg, weight))
    return torch.cat(outs, dim=2)


def _frame_conv_one_chunk(x: Tensor, weight: Tensor, context: Tensor | None) -> Tensor:
    """`frame_conv_channels_first` of frames that form one chunk. Without context the zero
    frames on both sides are the conv's own padding (no copy of x); with context the padding
    frames take x's layout, so a channels-last x (the FFN's token layout seen as (B, C, T, S))
    stays channels-last through the cat and the conv, with no transposing copy."""
    B, C, T, S = x.shape
    half = weight.shape[2] // 2
    if context is None or context.shape[2] == 0:
        return F.conv2d(x, weight, padding=(half, 0))
    layout = torch.channels_last if x.dim() == 4 and x.stride(1) == 1 and C > 1 else torch.contiguous_format
    past = context[:, :, max(0, context.shape[2] - half) :] if context is not None else x[:, :, :0]

    def zeros(frames: int) -> Tensor:
        return torch.empty(B, C, frames, S, dtype=x.dtype, device=x.device, memory_format=layout).zero_()

    parts = [zeros(half - past.shape[2]), past.to(x.dtype), x, zeros(half)]
    return F.conv2d(torch.cat([p for p in parts if p.shape[2]], dim=2), weight)


__all__ = ["key_conv", "key_conv_taps", "frame_conv_channels_first", "frame_conv_by_chunk"]
