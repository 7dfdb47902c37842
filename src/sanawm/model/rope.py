"""3D rotary position embedding (time, height, width), interleaved-pair layout.

A head of width D is rotated as D/2 complex pairs (x[2i], x[2i+1]). The first
`D/2 - 2*(D//6)` pairs carry the frame index, the next `D//6` the row, the last `D//6` the
column; each axis uses the usual 1/theta^(2j/d) frequencies over its own width d (twice its
pair count). Angles are built in float64 from absolute frame positions, so a chunk that
starts at frame f0 gets exactly the angles it has inside the whole clip.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Rotation(NamedTuple):
    """cos and sin (N, P) in float64 of the angles of P pairs for N tokens, and the same as
    unit complex numbers cos + i sin (complex128) for the CPU path of `apply_rope`."""

    cos: Tensor
    sin: Tensor
    unit: Tensor


def rotation(angles: Tensor) -> Rotation:
    """Precompute the tables once per call (every layer reuses them)."""
    cos, sin = torch.cos(angles), torch.sin(angles)
    return Rotation(cos, sin, torch.complex(cos, sin))


def _axis_pairs(head_dim: int) -> tuple[int, int, int]:
    """Complex pairs per axis (time, height, width) for a head of width `head_dim`."""
    spatial = head_dim // 6
    return head_dim // 2 - 2 * spatial, spatial, spatial


def _inv_freq(pairs: int, theta: float, device) -> Tensor:
    width = 2 * pairs
    return 1.0 / theta ** (torch.arange(0, width, 2, dtype=torch.float64, device=device) / width)


def rope_angles(head_dim: int, frames: int, height: int, width: int, *, frame_offset: int = 0,
                theta: float = 10000.0, device=None) -> Tensor:  # fmt: skip
    """Rotation angles (N, head_dim // 2) in float64 for N = frames*height*width tokens
    ordered (frame, row, column), frame indices starting at `frame_offset`."""
    pt, ph, pw = _axis_pairs(head_dim)
    f = torch.arange(frame_offset, frame_offset + frames, dtype=torch.float64, device=device)
    h = torch.arange(height, dtype=torch.float64, device=device)
    w = torch.arange(width, dtype=torch.float64, device=device)
    af = torch.outer(f, _inv_freq(pt, theta, device))[:, None, None, :].expand(frames, height, width, pt)
    ah = torch.outer(h, _inv_freq(ph, theta, device))[None, :, None, :].expand(frames, height, width, ph)
    aw = torch.outer(w, _inv_freq(pw, theta, device))[None, None, :, :].expand(frames, height, width, pw)
    return torch.cat([af, ah, aw], dim=-1).reshape(frames * height * width, -1)


def camera_rope_angles(angles: Tensor, head_dim: int) -> Tensor:
    """The angles the camera branch uses on the second half of its heads (width head_dim/2):
    the 3D split of that width, filled with the first pairs of each axis of the full table."""
    pt, ph, _ = _axis_pairs(head_dim)
    ct, ch, cw = _axis_pairs(head_dim // 2)
    return torch.cat([angles[:, :ct], angles[:, pt : pt + ch], angles[:, pt + ph : pt + ph + cw]], dim=-1)


def apply_rope(x: Tensor, rot: Rotation, *, inverse: bool = False) -> Tensor:
    """Rotate interleaved pairs of the last dim of x (..., N, D) by `rot` (N, D/2).

    float32/float64 inputs are rotated in float64 (as the reference does), lower precisions in
    float32; the result has x's dtype. On the CPU (eager) the pairs are multiplied as complex
    numbers by cos + i sin: (re cos - im sin, re sin + im cos), the products and sums of
    `apply_rope_pairs` in a third of the ops (tests hold the two equal); elsewhere, and under
    torch.compile (inductor does not fuse complex ops), `apply_rope_pairs` runs.
    """
    if not x.is_cpu or torch.compiler.is_compiling():
        return apply_rope_pairs(x, rot, inverse=inverse)
    complex_work = torch.complex128 if x.dtype in (torch.float32, torch.float64) else torch.complex64
    xw = x.to(complex_work.to_real())
    if xw.stride(-1) != 1 or xw.storage_offset() % 2 or any(s % 2 for s in xw.stride()[:-1]):
        xw = xw.clone(memory_format=torch.contiguous_format)  # view_as_complex needs whole pairs
    unit = rot.unit.to(complex_work)
    turned = torch.view_as_complex(xw.unflatten(-1, (-1, 2))) * (unit.conj() if inverse else unit)
    return torch.view_as_real(turned).flatten(-2).to(x.dtype)


def apply_rope_pairs(x: Tensor, rot: Rotation, *, inverse: bool = False) -> Tensor:
    """`apply_rope` written pair by pair (the GPU / compiled path and the tests' reference)."""
    work = torch.float64 if x.dtype in (torch.float32, torch.float64) else torch.float32
    cos, sin = rot.cos.to(work), rot.sin.to(work)
    if inverse:
        sin = -sin
    pairs = x.to(work).unflatten(-1, (-1, 2))
    re, im = pairs[..., 0], pairs[..., 1]
    out = torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1)
    return out.flatten(-2).to(x.dtype)


__all__ = ["Rotation", "rotation", "rope_angles", "camera_rope_angles", "apply_rope", "apply_rope_pairs"]
