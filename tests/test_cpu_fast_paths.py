"""CPU fast paths of the streaming hot loop, each held to the plain form it replaces."""

from __future__ import annotations

import pytest
import torch

from sanawm.model.rope import apply_rope, apply_rope_pairs, rope_angles, rotation


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("inverse", [False, True])
def test_complex_rope_equals_pairwise_rope(dtype, inverse):
    # Heads layout from a transposed token tensor (not contiguous), and a half-head slice
    # (what the camera branch rotates): both go through the complex path.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 48, 3, 64, generator=g).to(dtype).transpose(1, 2)
    for part in (x, x[..., 32:]):
        rot = rotation(rope_angles(part.shape[-1], 3, 4, 4, frame_offset=11))
        fast, plain = apply_rope(part, rot, inverse=inverse), apply_rope_pairs(part, rot, inverse=inverse)
        assert fast.dtype == plain.dtype == dtype
        # Same float64 products and sums; at most a last-bit difference where a CPU's scalar
        # complex multiply fuses them.
        torch.testing.assert_close(fast, plain, rtol=1e-6 if dtype != torch.bfloat16 else 8e-3, atol=1e-7)


def test_complex_rope_gradient_matches_pairwise():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 12, 16, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 2, 12, 16, generator=g, dtype=torch.float64)
    rot = rotation(rope_angles(16, 3, 2, 2))
    (fast,) = torch.autograd.grad((apply_rope(x, rot) * w).sum(), x)
    (plain,) = torch.autograd.grad((apply_rope_pairs(x, rot) * w).sum(), x)
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-14)
