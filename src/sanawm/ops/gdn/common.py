"""What every GDN implementation shares: the carried state and the shape contract.

Layout: q, k, v, q_rot, k_rot (B, H, T, S, D); beta (B, H, T, S); gamma (B, H, T).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class GDNState(NamedTuple):
    """Forward-scan state after the last frame; carry it into the next chunk."""

    kv: Tensor
    """(B, H, D, D), indexed [value dim, key dim]."""
    z: Tensor | None
    """(B, H, D) normaliser, or None for the camera branch's delta rule."""


def check_shapes(name: str, tensors: dict[str, Tensor], beta: Tensor, gamma: Tensor) -> None:
    """Assert the layout above (shapes only: no host sync). Callers inside the model build
    these tensors themselves, so a mismatch is a bug, not a user error."""
    shape = tensors["q"].shape
    assert len(shape) == 5, f"{name}: q must be (B, H, T, S, D), got {tuple(shape)}"
    for key, t in tensors.items():
        assert t.shape == shape, f"{name}: {key} has shape {tuple(t.shape)}, expected {tuple(shape)}"
    assert beta.shape == shape[:4], f"{name}: beta must be (B, H, T, S) = {tuple(shape[:4])}, got {tuple(beta.shape)}"
    assert gamma.shape == shape[:3], f"{name}: gamma must be (B, H, T) = {tuple(shape[:3])}, got {tuple(gamma.shape)}"


def check_state(state: GDNState, B: int, H: int, D: int, normalizer: bool) -> None:
    """Assert an initial state fits (B, H, D) and carries z exactly when there is a normaliser."""
    assert state.kv.shape == (B, H, D, D), f"initial_state.kv must be {(B, H, D, D)}, got {tuple(state.kv.shape)}"
    if normalizer:
        assert state.z is not None, "initial_state of gdn needs a normaliser z; got None"
        assert state.z.shape == (B, H, D), f"initial_state.z must be {(B, H, D)}, got {tuple(state.z.shape)}"


__all__ = ["GDNState", "check_shapes", "check_state"]
