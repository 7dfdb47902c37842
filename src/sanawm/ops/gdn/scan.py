"""The PyTorch GDN path: batched per-frame transitions, a sequential D x D scan, batched read-out.

Frame t's insertion is the affine map kv_t = kv_{t-1} W_t + U_t with
W_t = gamma_t (I - k_rot^T diag(beta) k_rot) and U_t = v^T diag(beta) k_rot (and likewise for
the normaliser z), so the S-sized products of all frames are batched and only the D x D scan
over frames stays sequential. Computes in float32 (float64 for float64 inputs), converting a
block of frames at a time, and returns q's dtype. Differentiable: this is the path training
runs (tests/test_gdn_ops.py checks its float64 gradients against the reference).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from sanawm.chunks import chunk_spans
from sanawm.ops.gdn.common import GDNState


# Elements of one (B, H, frames, S, D) block of frames converted to the work dtype at a time,
# so bf16 inputs are never copied to float32 as a whole (a 60 s clip has ~10^8 per input).
_BLOCK_ELEMENTS = 1 << 26


def _work_dtype(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _frame_blocks(shape: torch.Size) -> list[slice]:
    B, H, T, S, D = shape
    step = max(1, _BLOCK_ELEMENTS // (B * H * S * D))
    return [slice(a, min(a + step, T)) for a in range(0, T, step)]


class _Transitions(NamedTuple):
    """Per-frame affine maps kv_t = kv_{t-1} w_kv_t + u_kv_t and z_t = w_z_t z_{t-1} + u_z_t."""

    w_kv: Tensor  # (B, H, T, D, D), symmetric
    u_kv: Tensor  # (B, H, T, D, D)
    w_z: Tensor | None  # (B, H, T, D, D), symmetric
    u_z: Tensor | None  # (B, H, T, D)


def _transitions(k: Tensor, v: Tensor, k_rot: Tensor, beta: Tensor, gamma: Tensor, normalizer: bool) -> _Transitions:
    B, H, T, S, D = k.shape
    work = _work_dtype(k)
    eye = torch.eye(D, dtype=work, device=k.device)
    w_kv, u_kv = (k.new_empty(B, H, T, D, D, dtype=work) for _ in range(2))
    w_z = k.new_empty(B, H, T, D, D, dtype=work) if normalizer else None
    u_z = k.new_empty(B, H, T, D, dtype=work) if normalizer else None
    for blk in _frame_blocks(k.shape):
        kb, vb, krb = (t[:, :, blk].to(work) for t in (k, v, k_rot))
        bb = beta[:, :, blk, :, None].to(work)
        g = gamma[:, :, blk, None, None].to(work)
        w_kv[:, :, blk] = g * (eye - krb.transpose(-1, -2) @ (bb * krb))
        u_kv[:, :, blk] = (bb * vb).transpose(-1, -2) @ krb
        if normalizer:
            bk = bb * kb
            w_z[:, :, blk] = g * (eye - kb.transpose(-1, -2) @ bk)
            u_z[:, :, blk] = bk.sum(dim=-2)
    return _Transitions(w_kv, u_kv, w_z, u_z)


def _scan_states(tr: _Transitions, state: GDNState, frames: Sequence[int]) -> tuple[list[GDNState], GDNState]:
    """Apply the transitions of `frames` in order; returns the state after each frame."""
    out = []
    for t in frames:
        kv = state.kv @ tr.w_kv[:, :, t] + tr.u_kv[:, :, t]
        z = None
        if state.z is not None:
            z = (tr.w_z[:, :, t] @ state.z[..., None])[..., 0] + tr.u_z[:, :, t]
        state = GDNState(kv, z)
        out.append(state)
    return out, state


def _history(
    tr: _Transitions,
    spans: list[tuple[int, int]],
    initial: GDNState,
) -> tuple[Tensor, Tensor | None, GDNState]:
    """The state each frame reads, forward plus reverse-within-chunk, and the final forward state.

    Both directions are read with the same queries, so their states can be summed before the
    (expensive, S-sized) read-out.
    """
    T = tr.w_kv.shape[2]
    fwd, final = _scan_states(tr, initial, range(T))
    kv_hist = torch.stack([s.kv for s in fwd], dim=2)
    z_hist = torch.stack([s.z for s in fwd], dim=2) if initial.z is not None else None
    zero = GDNState(torch.zeros_like(initial.kv), None if initial.z is None else torch.zeros_like(initial.z))
    for start, end in spans:
        if end - start < 2:
            continue  # a single frame has nothing after it inside its chunk
        # Reading frame t needs frames t+1..end-1: scan end-1, ..., start+1 and shift by one.
        rev, _ = _scan_states(tr, zero, range(end - 1, start, -1))
        kv_hist[:, :, start : end - 1] += torch.stack([s.kv for s in reversed(rev)], dim=2)
        if z_hist is not None:
            z_hist[:, :, start : end - 1] += torch.stack([s.z for s in reversed(rev)], dim=2)
    return kv_hist, z_hist, final


def _read_out(q: Tensor, q_rot: Tensor, kv_hist: Tensor, z_hist: Tensor | None, eps: float | None) -> Tensor:
    """num = q_rot kv^T (divided by q z + eps with a normaliser), in q_rot's dtype."""
    work = kv_hist.dtype
    out = torch.empty_like(q_rot)
    for blk in _frame_blocks(q_rot.shape):
        num = q_rot[:, :, blk].to(work) @ kv_hist[:, :, blk].transpose(-1, -2)
        if z_hist is not None:
            den = (q[:, :, blk].to(work) @ z_hist[:, :, blk, :, None])[..., 0]
            num = num / (den[..., None] + eps)
        out[:, :, blk] = num.to(out.dtype)
    return out


def torch_scan(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_rot: Tensor,
    k_rot: Tensor,
    beta: Tensor,
    gamma: Tensor,
    *,
    eps: float | None,
    chunk_starts: Sequence[int] | None,
    initial_state: GDNState | None,
) -> tuple[Tensor, GDNState]:
    """`gdn` (eps given) or `delta_rule` (eps None: no normaliser, q = q_rot, k = k_rot):
    output (B, H, T, S, D) in q's dtype and the final forward state in the work dtype."""
    normalizer = eps is not None
    spans = chunk_spans(chunk_starts, q.shape[2])
    # One chunk in the work dtype already (nothing to convert block by block): the lean path.
    if len(spans) == 1 and q.dtype == _work_dtype(q) and q.numel() <= _BLOCK_ELEMENTS:
        return _one_chunk_scan(q, k, v, q_rot, k_rot, beta, gamma, eps, initial_state)
    tr = _transitions(k, v, k_rot, beta, gamma, normalizer)
    if initial_state is None:
        B, H, _, _, D = q.shape
        work = tr.w_kv.dtype
        initial_state = GDNState(
            q.new_zeros(B, H, D, D, dtype=work), q.new_zeros(B, H, D, dtype=work) if normalizer else None
        )
    kv_hist, z_hist, final = _history(tr, spans, initial_state)
    return _read_out(q, q_rot, kv_hist, z_hist, eps), final


def _one_chunk_scan(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_rot: Tensor,
    k_rot: Tensor,
    beta: Tensor,
    gamma: Tensor,
    eps: float | None,
    initial_state: GDNState | None,
) -> tuple[Tensor, GDNState]:
    """`torch_scan` of frames that form one chunk (every streaming call), in a fifth of the
    ops: the same transitions, scans and read-out, written for one block of frames, so the
    per-op overhead that dominates at streaming sizes shrinks. Same function to float32
    rounding (the tests hold it to the general path and to the float64 recurrence)."""
    B, H, T, S, D = q.shape
    work, out_dtype = _work_dtype(q), q_rot.dtype
    q, k, v, q_rot, k_rot = (t.to(work) for t in (q, k, v, q_rot, k_rot))
    b = beta.to(work)[..., None]
    g = gamma.to(work)[..., None, None]
    eye = torch.eye(D, dtype=work, device=q.device)
    w_kv = g * (eye - k_rot.transpose(-1, -2) @ (b * k_rot))  # (B, H, T, D, D)
    u_kv = (b * v).transpose(-1, -2) @ k_rot
    normalizer = eps is not None
    if normalizer:
        bk = b * k
        w_z = g * (eye - k.transpose(-1, -2) @ bk)
        u_z = bk.sum(dim=-2)[..., None]  # (B, H, T, D, 1)
    if initial_state is None:
        kv = q.new_zeros(B, H, D, D, dtype=work)
        z = q.new_zeros(B, H, D, 1, dtype=work) if normalizer else None
    else:
        kv = initial_state.kv.to(work)
        z = initial_state.z.to(work)[..., None] if normalizer else None
    kv_read, z_read = [], []
    for t in range(T):  # forward: frame t reads the state after inserting frames .. t
        kv = torch.baddbmm(u_kv[:, :, t].flatten(0, 1), kv.flatten(0, 1), w_kv[:, :, t].flatten(0, 1)).view(B, H, D, D)
        kv_read.append(kv)
        if normalizer:
            z = torch.baddbmm(u_z[:, :, t].flatten(0, 1), w_z[:, :, t].flatten(0, 1), z.flatten(0, 1)).view(B, H, D, 1)
            z_read.append(z)
    final = GDNState(kv, z[..., 0] if normalizer else None)
    # reverse: frame t also reads frames t+1 .. T-1, scanned from the last one (a zero state
    # after inserting frame T-1 is just its u)
    rev_kv, rev_z = u_kv[:, :, T - 1], u_z[:, :, T - 1] if normalizer else None
    for t in range(T - 2, -1, -1):
        kv_read[t] = kv_read[t] + rev_kv
        if normalizer:
            z_read[t] = z_read[t] + rev_z
        if t > 0:
            rev_kv = torch.baddbmm(u_kv[:, :, t].flatten(0, 1), rev_kv.flatten(0, 1), w_kv[:, :, t].flatten(0, 1)).view(B, H, D, D)
            if normalizer:
                rev_z = torch.baddbmm(u_z[:, :, t].flatten(0, 1), w_z[:, :, t].flatten(0, 1), rev_z.flatten(0, 1)).view(B, H, D, 1)
    num = q_rot @ torch.stack(kv_read, dim=2).transpose(-1, -2)
    if normalizer:
        num = num / (q @ torch.stack(z_read, dim=2) + eps)
    return num.to(out_dtype), final


__all__ = ["torch_scan"]
