"""Frame-wise Gated DeltaNet (GDN): the linear-attention recurrence of SANA-WM.

One recurrence step per latent frame; every frame inserts all of its S tokens at once.
Per head (width D) the state is a D x D matrix `kv` (indexed [value dim, key dim]) and, for
the main branch, a D-vector normaliser `z`. For frame t with tokens as rows
(q, k, v, q_rot, k_rot: S x D; beta: S; gamma: scalar):

    kv <- gamma * kv
    kv <- kv + ((v^T - kv k_rot^T) * beta) k_rot          # delta rule on the rotated keys
    z  <- gamma * z
    z  <- z + k^T ((1 - k z) * beta)                       # same rule with target 1
    num_t = q_rot kv^T        (S x D)      den_t = q z      (S)

Equivalently kv_t = kv_{t-1} W_t + U_t with W_t = gamma_t (I - k_rot^T diag(beta) k_rot)
and U_t = v^T diag(beta) k_rot, which is what the chunked path uses: the S-sized products
are batched over all frames and only a D x D scan stays sequential.

Directions:
- forward (causal): the output of frame t reads the state after inserting frames ..t;
- reverse (exclusive): the output of frame t reads frames t+1.. of its own chunk only.
`gdn` combines them as (num_fwd + num_rev) / (den_fwd + den_rev + eps); the camera branch's
`delta_rule` has no normaliser and returns num_fwd + num_rev.

Layout (all functions): q, k, v, q_rot, k_rot: (B, H, T, S, D); beta: (B, H, T, S);
gamma: (B, H, T). `gdn` / `delta_rule` compute in float32 (float64 for float64 inputs),
converting a block of frames at a time, and return q's dtype; the recurrent reference
computes in the inputs' dtype. `chunk_starts` lists the first frame of every chunk (starting with 0);
`None` means one chunk, i.e. fully bidirectional; `range(T)` makes the op causal.

`backend` picks the implementation of `gdn` / `delta_rule`: "torch" (this file), "triton" (the
fused kernels of `sanawm.ops.gdn_triton`; CUDA, no autograd) or "auto" (triton where it applies:
CUDA tensors, triton importable, no gradient needed; torch otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from sanawm.errors import UserInputError

BACKENDS = ("auto", "torch", "triton")

class GDNState(NamedTuple):
    """Forward-scan state after the last frame; carry it into the next chunk."""

    kv: Tensor
    """(B, H, D, D), indexed [value dim, key dim]."""
    z: Tensor | None
    """(B, H, D) normaliser, or None for the camera branch's delta rule."""


def _segments(chunk_starts: Sequence[int] | None, num_frames: int) -> list[tuple[int, int]]:
    """(start, end) frame ranges of the chunks; validates the start list."""
    starts = [0] if chunk_starts is None else [int(s) for s in chunk_starts]
    if not starts or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])) or starts[-1] >= num_frames:
        raise ValueError(f"chunk_starts must start at 0, increase strictly and stay below T={num_frames}; got {starts}")
    ends = starts[1:] + [num_frames]
    return list(zip(starts, ends))


def _zero_state(q: Tensor, normalizer: bool) -> GDNState:
    B, H, _, _, D = q.shape
    kv = q.new_zeros(B, H, D, D)
    return GDNState(kv, q.new_zeros(B, H, D) if normalizer else None)


# ----------------------------------------------------------------------------------------
# Reference: one frame per step, written as the formulas above.
# ----------------------------------------------------------------------------------------


def _recurrent_insert(state: GDNState, k: Tensor, v: Tensor, k_rot: Tensor, beta: Tensor, gamma: Tensor) -> GDNState:
    """Insert one frame (k, v, k_rot: (B, H, S, D); beta: (B, H, S); gamma: (B, H))."""
    g = gamma[..., None, None]
    kv = g * state.kv
    delta = (v.transpose(-1, -2) - kv @ k_rot.transpose(-1, -2)) * beta[..., None, :]  # (B, H, D, S)
    kv = kv + delta @ k_rot
    z = None
    if state.z is not None:
        z = gamma[..., None] * state.z
        err = (1.0 - (k @ z[..., None])[..., 0]) * beta  # (B, H, S)
        z = z + (k.transpose(-1, -2) @ err[..., None])[..., 0]
    return GDNState(kv, z)


def _recurrent_read(state: GDNState, q: Tensor, q_rot: Tensor) -> tuple[Tensor, Tensor | None]:
    num = q_rot @ state.kv.transpose(-1, -2)
    den = (q @ state.z[..., None])[..., 0] if state.z is not None else None
    return num, den


def recurrent_scan(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_rot: Tensor,
    k_rot: Tensor,
    beta: Tensor,
    gamma: Tensor,
    *,
    reverse: bool = False,
    normalizer: bool = True,
    initial_state: GDNState | None = None,
) -> tuple[Tensor, Tensor | None, GDNState]:
    """Plain frame-by-frame scan over all T frames (one chunk).

    Returns num (B, H, T, S, D), den (B, H, T, S) or None, and the state after the scan.
    Forward frames read the state including themselves; reverse frames read the state of
    the later frames only (their own frame is inserted after reading).
    """
    state = initial_state if initial_state is not None else _zero_state(q, normalizer)
    T = q.shape[2]
    nums: list[Tensor] = [None] * T  # type: ignore[list-item]
    dens: list[Tensor | None] = [None] * T
    order = range(T - 1, -1, -1) if reverse else range(T)
    for t in order:
        if not reverse:
            state = _recurrent_insert(state, k[:, :, t], v[:, :, t], k_rot[:, :, t], beta[:, :, t], gamma[:, :, t])
        nums[t], dens[t] = _recurrent_read(state, q[:, :, t], q_rot[:, :, t])
        if reverse:
            state = _recurrent_insert(state, k[:, :, t], v[:, :, t], k_rot[:, :, t], beta[:, :, t], gamma[:, :, t])
    num = torch.stack(nums, dim=2)
    den = torch.stack(dens, dim=2) if normalizer else None  # type: ignore[arg-type]
    return num, den, state


# ----------------------------------------------------------------------------------------
# Chunked path: batched per-frame transitions, sequential D x D scan, batched read-out.
# ----------------------------------------------------------------------------------------


# Elements of one (B, H, frames, S, D) slab converted to the work dtype at a time, so bf16
# inputs are never copied to float32 as a whole (a 60 s clip has ~10^8 elements per input).
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
    segments: list[tuple[int, int]],
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
    for start, end in segments:
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


def _chunked(
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
    normalizer = eps is not None
    segments = _segments(chunk_starts, q.shape[2])
    tr = _transitions(k, v, k_rot, beta, gamma, normalizer)
    if initial_state is None:
        B, H, _, _, D = q.shape
        work = tr.w_kv.dtype
        initial_state = GDNState(
            q.new_zeros(B, H, D, D, dtype=work), q.new_zeros(B, H, D, dtype=work) if normalizer else None
        )
    kv_hist, z_hist, final = _history(tr, segments, initial_state)
    return _read_out(q, q_rot, kv_hist, z_hist, eps), final


def _check(name: str, tensors: dict[str, Tensor], beta: Tensor, gamma: Tensor) -> None:
    shape = tensors["q"].shape
    if len(shape) != 5:
        raise ValueError(f"{name}: q must be (B, H, T, S, D), got {tuple(shape)}")
    for key, t in tensors.items():
        if t.shape != shape:
            raise ValueError(f"{name}: {key} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    if beta.shape != shape[:4]:
        raise ValueError(f"{name}: beta must be (B, H, T, S) = {tuple(shape[:4])}, got {tuple(beta.shape)}")
    if gamma.shape != shape[:3]:
        raise ValueError(f"{name}: gamma must be (B, H, T) = {tuple(shape[:3])}, got {tuple(gamma.shape)}")


def _fused_path(backend: str, q: Tensor, beta: Tensor, gamma: Tensor, tensors: tuple[Tensor, ...]):
    """The fused module if `backend` selects it for these inputs, else None (torch path)."""
    if backend not in BACKENDS:
        raise UserInputError(f"GDN backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch" or (backend == "auto" and not q.is_cuda):
        return None
    try:
        from sanawm.ops import gdn_triton
    except ImportError as err:
        if backend == "triton":
            raise UserInputError(f"GDN backend 'triton' needs the triton package ({err})") from err
        return None
    reason = gdn_triton.unsupported_reason(q, beta, gamma, tensors)
    if reason is None:
        return gdn_triton
    if backend == "triton":
        raise UserInputError(f"GDN backend 'triton' cannot run these inputs: {reason}")
    return None


def gdn(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_rot: Tensor,
    k_rot: Tensor,
    beta: Tensor,
    gamma: Tensor,
    *,
    eps: float,
    chunk_starts: Sequence[int] | None = None,
    initial_state: GDNState | None = None,
    backend: str = "auto",
) -> tuple[Tensor, GDNState]:
    """Main-branch GDN: forward scan over all frames plus reverse scan within each chunk.

    q/k feed the normaliser, q_rot/k_rot (RoPE applied) the numerator. Returns the output
    (B, H, T, S, D) = (num_fwd + num_rev) / (den_fwd + den_rev + eps) in q's dtype and the
    forward state after the last frame (seed it as `initial_state` of the next chunk).
    `backend`: "auto" | "torch" | "triton" (module docstring).
    """
    _check("gdn", dict(q=q, k=k, v=v, q_rot=q_rot, k_rot=k_rot), beta, gamma)
    fused = _fused_path(backend, q, beta, gamma, (q, k, v, q_rot, k_rot))
    if fused is not None:
        return fused.gdn_triton(
            q, k, v, q_rot, k_rot, beta, gamma, eps=eps, chunk_starts=chunk_starts, initial_state=initial_state
        )
    return _chunked(q, k, v, q_rot, k_rot, beta, gamma, eps=eps, chunk_starts=chunk_starts, initial_state=initial_state)


def delta_rule(
    q_rot: Tensor,
    k_rot: Tensor,
    v: Tensor,
    beta: Tensor,
    gamma: Tensor,
    *,
    chunk_starts: Sequence[int] | None = None,
    initial_state: GDNState | None = None,
    backend: str = "auto",
) -> tuple[Tensor, GDNState]:
    """Camera-branch delta rule: numerator only, forward plus reverse-within-chunk.

    Returns (B, H, T, S, D) = num_fwd + num_rev and the forward state (z is None).
    `backend`: "auto" | "torch" | "triton" (module docstring).
    """
    _check("delta_rule", dict(q=q_rot, k=k_rot, v=v), beta, gamma)
    fused = _fused_path(backend, q_rot, beta, gamma, (q_rot, k_rot, v))
    if fused is not None:
        return fused.delta_rule_triton(
            q_rot, k_rot, v, beta, gamma, chunk_starts=chunk_starts, initial_state=initial_state
        )
    return _chunked(
        q_rot, k_rot, v, q_rot, k_rot, beta, gamma, eps=None, chunk_starts=chunk_starts, initial_state=initial_state
    )


def gdn_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_rot: Tensor,
    k_rot: Tensor,
    beta: Tensor,
    gamma: Tensor,
    *,
    eps: float | None,
    chunk_starts: Sequence[int] | None = None,
    initial_state: GDNState | None = None,
) -> tuple[Tensor, GDNState]:
    """`gdn` (eps given) or `delta_rule` (eps None: no normaliser) by the plain recurrence.

    Slow; for tests and kernel checks. Runs the reverse scan chunk by chunk.
    """
    normalizer = eps is not None
    T = q.shape[2]
    num, den, final = recurrent_scan(
        q, k, v, q_rot, k_rot, beta, gamma, normalizer=normalizer, initial_state=initial_state
    )
    num_parts, den_parts = [], []
    for start, end in _segments(chunk_starts, T):
        part = slice(start, end)
        n, d, _ = recurrent_scan(
            q[:, :, part], k[:, :, part], v[:, :, part], q_rot[:, :, part], k_rot[:, :, part],
            beta[:, :, part], gamma[:, :, part], reverse=True, normalizer=normalizer,
        )  # fmt: skip
        num_parts.append(n)
        den_parts.append(d)
    num = num + torch.cat(num_parts, dim=2)
    if not normalizer:
        return num, final
    den = den + torch.cat(den_parts, dim=2)
    return num / (den[..., None] + eps), final


__all__ = ["GDNState", "gdn", "delta_rule", "gdn_reference", "recurrent_scan", "BACKENDS"]
