"""The GDN reference: the plain frame-by-frame recurrence, written as the formulas of the
package docstring (`sanawm.ops.gdn`). Slow; the ground truth of the tests and kernel checks.
Computes in the inputs' dtype (float64 inputs give the float64 reference)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from sanawm.chunks import chunk_spans
from sanawm.ops.gdn.common import GDNState


def _zero_state(q: Tensor, normalizer: bool) -> GDNState:
    B, H, _, _, D = q.shape
    kv = q.new_zeros(B, H, D, D)
    return GDNState(kv, q.new_zeros(B, H, D) if normalizer else None)


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

    Runs the forward scan over all frames, then the reverse scan chunk by chunk.
    """
    normalizer = eps is not None
    T = q.shape[2]
    num, den, final = recurrent_scan(
        q, k, v, q_rot, k_rot, beta, gamma, normalizer=normalizer, initial_state=initial_state
    )
    num_parts, den_parts = [], []
    for start, end in chunk_spans(chunk_starts, T):
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


__all__ = ["gdn_reference", "recurrent_scan"]
