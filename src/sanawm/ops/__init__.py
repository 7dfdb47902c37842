"""Numerical kernels of the model (pure PyTorch; the reference paths for faster kernels)."""

from sanawm.ops.gdn import GDNState, delta_rule, gdn, gdn_reference
from sanawm.ops.temporal import frame_conv, key_conv

__all__ = ["GDNState", "delta_rule", "gdn", "gdn_reference", "frame_conv", "key_conv"]
