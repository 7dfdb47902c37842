"""A tiny random LTX-2 refiner transformer (the config that WAVE2.md says runs), CPU, fp32."""

from __future__ import annotations

import torch

TINY_LTX2 = dict(
    in_channels=4,
    out_channels=4,
    patch_size=1,
    patch_size_t=1,
    num_attention_heads=2,
    attention_head_dim=8,
    cross_attention_dim=16,
    caption_channels=16,
    audio_in_channels=4,
    audio_out_channels=4,
    audio_num_attention_heads=2,
    audio_attention_head_dim=4,
    audio_cross_attention_dim=8,
    num_layers=2,
    qk_norm="rms_norm_across_heads",
    rope_double_precision=False,
)


def tiny_ltx2_transformer(seed: int = 0):
    """diffusers' LTX2VideoTransformer3DModel with random weights plus noise (so that
    zero-initialised parts still act)."""
    from diffusers import LTX2VideoTransformer3DModel

    torch.manual_seed(seed)
    model = LTX2VideoTransformer3DModel(**TINY_LTX2).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model
