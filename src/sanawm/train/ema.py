"""Exponential moving average of a model's trainable parameters.

After update n (n = 0, 1, ...) with decay d_n, every shadow value is
    shadow <- d_n * shadow + (1 - d_n) * param,
with d_n = decay, or min(decay, (1 + n) / (10 + n)) with warm-up (so the first updates follow
the fast-changing young model closely). Shadows are float32 and live where the parameters
live, with the same sharding under FSDP2 (the update is element-wise on local shards).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sanawm.errors import UserInputError


def _is_dtensor(t: Tensor) -> bool:
    return hasattr(t, "full_tensor") and hasattr(t, "device_mesh")


class EMA:
    """EMA of `model`'s parameters that require grad, keyed by parameter name."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0 <= decay < 1:
            raise UserInputError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.shadow = {n: p.detach().float().clone() for n, p in self.params.items()}

    def current_decay(self) -> float:
        """Decay the next update uses."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        d = self.current_decay()
        shadows = list(self.shadow.values())
        current = [p.detach().float() for p in self.params.values()]
        torch._foreach_lerp_(shadows, current, 1.0 - d)  # shadow + (1 - d) (param - shadow)
        self.updates += 1

    def full_state(self) -> dict[str, Tensor]:
        """Unsharded float32 CPU copies of every shadow (a collective under FSDP2: call it
        on every rank)."""
        out = {}
        for name, t in self.shadow.items():
            full = t.full_tensor() if _is_dtensor(t) else t
            out[name] = full.detach().cpu().clone()
        return out

    @torch.no_grad()
    def load_full_state(self, state: dict[str, Tensor], updates: int) -> None:
        """Restore shadows from `full_state` output (sharding them like the parameters)."""
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise UserInputError(f"EMA state lacks {len(missing)} parameter(s), e.g. {missing[:3]}")
        for name, t in self.shadow.items():
            full = state[name]
            if tuple(full.shape) != tuple(t.shape):
                raise UserInputError(f"EMA state {name}: shape {tuple(full.shape)}, expected {tuple(t.shape)}")
            if _is_dtensor(t):
                from torch.distributed.tensor import distribute_tensor

                t.copy_(distribute_tensor(full.to(t.device_mesh.device_type).float(), t.device_mesh, t.placements))
            else:
                t.copy_(full)
        self.updates = updates


__all__ = ["EMA"]
