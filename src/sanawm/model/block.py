"""One transformer block: adaLN-single modulated attention, Plücker injection, text
cross-attention and the temporal GLU feed-forward.

    x += gate_msa * attn(LN(x) * (1 + scale_msa) + shift_msa)
    x += plucker_proj(plucker)                       # chunk-Plücker camera features
    x += cross_attn(x, text)
    x += gate_mlp * mlp(LN(x) * (1 + scale_mlp) + shift_mlp)

shift/scale/gate come per latent frame from `scale_shift_table + t_block(t)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sanawm.model.attention import CallContext, GDNAttention, GDNPast, SoftmaxAttention, SoftmaxPast
from sanawm.model.config import SanaWMConfig
from sanawm.model.layers import CrossAttention, GLUFeedForward, layer_norm, modulate


@dataclass
class BlockPast:
    """What one block carries from committed chunks."""

    attn: GDNPast | SoftmaxPast
    ffn_context: Tensor
    """(B, C, P, S) last frames of the FFN's spatial output (the temporal conv's left context)."""


class SanaWMBlock(nn.Module):
    def __init__(self, cfg: SanaWMConfig, softmax: bool, device=None):
        super().__init__()
        C = cfg.hidden_size
        self.scale_shift_table = nn.Parameter(torch.zeros(6, C, device=device))
        self.attn = SoftmaxAttention(cfg, device=device) if softmax else GDNAttention(cfg, device=device)
        self.plucker_proj = nn.Linear(C, C, device=device)
        self.cross_attn = CrossAttention(C, cfg.num_heads, cfg.cross_norm_eps, device=device)
        self.mlp = GLUFeedForward(C, cfg.ffn_hidden, cfg.ffn_temporal_kernel, device=device)

    def forward(
        self,
        x: Tensor,
        t_mod: Tensor,
        text: Tensor,
        text_bias: Tensor | None,
        plucker: Tensor | None,
        ctx: CallContext,
        past: BlockPast | None = None,
        commit: bool = False,
    ) -> tuple[Tensor, BlockPast | None]:
        """x (B, T, S, C); t_mod (B, T, 6, C) = t_block(t); text (B, L, C); plucker (B, T, S, C)."""
        mod = (self.scale_shift_table + t_mod)[:, :, :, None, :]  # (B, T, 6, 1, C)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.unbind(dim=2)

        attn_out, attn_past = self.attn(
            modulate(layer_norm(x), shift_msa, scale_msa), ctx, past.attn if past else None, commit
        )
        x = x + gate_msa * attn_out
        if plucker is not None:
            x = x + self.plucker_proj(plucker)
        x = x + self.cross_attn(x, text, text_bias)

        h = modulate(layer_norm(x), shift_mlp, scale_mlp)
        spatial = self.mlp.spatial(h, ctx.local_height, ctx.width, halo=ctx.sequence)
        ffn_context = past.ffn_context if past else None
        x = x + gate_mlp * self.mlp.temporal(spatial, ctx.chunk_starts, ffn_context)

        new_past = None
        if commit:
            frames = spatial if ffn_context is None else torch.cat([ffn_context, spatial], dim=2)
            keep = self.mlp.context_frames
            new_past = BlockPast(attn_past, frames[:, :, frames.shape[2] - keep :].detach().clone())
        return x, new_past


__all__ = ["SanaWMBlock", "BlockPast"]
