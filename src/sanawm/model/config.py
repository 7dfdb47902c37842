"""Configuration of the stage-1 SANA-WM diffusion transformer.

`SanaWMConfig` holds every number that changes the architecture or its arithmetic;
`build_preset(name, **overrides)` returns an un-initialised model for a named size.
Eps values and scale factors default to what the public release uses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sanawm.errors import UserInputError


@dataclass(frozen=True)
class SanaWMConfig:
    """Shape and numerics of a SANA-WM stage-1 DiT (defaults: the public 2.6 B release)."""

    depth: int = 20
    """Number of transformer blocks."""
    hidden_size: int = 2240
    """Token width C; the number of heads is `hidden_size // head_dim`."""
    head_dim: int = 112
    """Width of one attention head (GDN, softmax, camera branch and cross-attention)."""
    in_channels: int = 128
    """Latent channels of the video VAE; the model predicts the same number."""
    caption_channels: int = 2304
    """Width of the text-encoder hidden states (Gemma-2)."""
    max_text_len: int = 300
    """Rows of the null-caption embedding `y_embedder.y_embedding`."""
    softmax_blocks: tuple[int, ...] = (3, 7, 11, 15, 19)
    """Indices of the blocks that use softmax attention; all others use frame-wise GDN."""
    mlp_ratio: float = 3.0
    """FFN hidden width is `int(hidden_size * mlp_ratio)` (GLU input is twice that)."""
    ffn_temporal_kernel: int = 3
    """Kernel length of the FFN's temporal conv `t_conv` (odd)."""
    key_conv_kernel: int = 4
    """Kernel length of the GDN short conv on keys (`conv_k`, `conv_k_cam`), along frames."""
    plucker_channels: int = 48
    """Chunk-Plücker input channels: 6 ray values x 8 raw frames per latent frame."""
    text_norm_init: float = 0.01
    """Initial weight of `attention_y_norm` (the text-embedding RMSNorm scale factor)."""
    rope_theta: float = 10000.0
    """Base of the 3D rotary position embedding."""
    attn_norm_eps: float = 1e-5
    """Eps of the q/k RMSNorms of self-attention and of the text-embedding RMSNorm."""
    cross_norm_eps: float = 1e-6
    """Eps of the q/k RMSNorms of cross-attention."""
    gdn_eps: float = 1e-8
    """Eps added to the GDN normaliser before dividing."""
    softmax_attn_dtype: str | None = "bfloat16"
    """Dtype q/k/v are cast to for the softmax blocks' attention when the activations are
    float32. The released weights were trained and evaluated this way (the reference always
    runs that SDPA in bfloat16); `None` keeps the activation dtype (exact float32)."""
    camera_rms_clamp: bool = False
    """GDN blocks' camera branch: also scale each UCPE-transformed q/k/v token down so its
    channel RMS does not exceed the untransformed one (as diffusers 0.42.1, sglang and
    vllm-omni do). False is the reference's GPU path, which only lowers beta by the keys'
    norm inflation; the two variants differ by ~1e-2 (see benchmarks/PARITY.md)."""
    gdn_backend: str = "auto"
    """Implementation of the GDN recurrences (`sanawm.ops.gdn`): "torch", "triton" (fused
    kernels, CUDA, inference only) or "auto" (triton on CUDA when importable and no gradient
    is needed, torch otherwise). Same function either way, to fp32 rounding."""
    gdn_precision: str = "auto"
    """Tensor-core precision of the fused GDN kernels (`sanawm.ops.gdn.fused`): "ieee" (fp32
    products from exact bf16 pieces), "tf32", or "auto" (tf32 for bf16 / fp16 activations,
    whose outputs are rounded to 16 bits anyway; ieee for float32). The torch path ignores it."""

    def __post_init__(self) -> None:
        checks = {
            "depth must be >= 1": self.depth >= 1,
            "hidden_size must be a multiple of head_dim": self.hidden_size % self.head_dim == 0,
            "head_dim must be a multiple of 8 (camera 4x4 groups on half the head)": self.head_dim % 8 == 0,
            "ffn_temporal_kernel must be odd": self.ffn_temporal_kernel % 2 == 1,
            "key_conv_kernel must be >= 1": self.key_conv_kernel >= 1,
            "softmax_blocks must lie in [0, depth)": all(0 <= i < self.depth for i in self.softmax_blocks),
            "softmax_attn_dtype must be None, 'bfloat16', 'float16' or 'float32'": self.softmax_attn_dtype
            in (None, "bfloat16", "float16", "float32"),
            "gdn_backend must be 'auto', 'torch' or 'triton'": self.gdn_backend in ("auto", "torch", "triton"),
            "gdn_precision must be 'auto', 'ieee' or 'tf32'": self.gdn_precision in ("auto", "ieee", "tf32"),
        }
        bad = [msg for msg, ok in checks.items() if not ok]
        if bad:
            raise UserInputError("invalid SanaWMConfig: " + "; ".join(bad))
        object.__setattr__(self, "softmax_blocks", tuple(sorted(set(self.softmax_blocks))))

    @property
    def num_heads(self) -> int:
        return self.hidden_size // self.head_dim

    @property
    def ffn_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)


def every_nth(depth: int, n: int) -> tuple[int, ...]:
    """Block indices n-1, 2n-1, ... below `depth` (the release's "softmax every 4")."""
    return tuple(i for i in range(depth) if (i + 1) % n == 0)


PRESETS: dict[str, SanaWMConfig] = {
    # The public release (Efficient-Large-Model/SANA-WM_bidirectional).
    "sanawm-2.6b": SanaWMConfig(),
    # The shape of the parity fixture: 4 blocks, 2 heads.
    "tiny": SanaWMConfig(
        depth=4, hidden_size=224, in_channels=16, caption_channels=64, max_text_len=12, softmax_blocks=(3,)
    ),
    # Small models for training from scratch on the release's latent / text spaces.
    "small": SanaWMConfig(depth=8, hidden_size=336, softmax_blocks=every_nth(8, 4)),
    "base": SanaWMConfig(depth=12, hidden_size=672, softmax_blocks=every_nth(12, 4)),
}


def preset_config(name: str, **overrides) -> SanaWMConfig:
    """The named preset's config with `overrides` applied (unknown names raise)."""
    if name not in PRESETS:
        raise UserInputError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    known = {f.name for f in dataclasses.fields(SanaWMConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UserInputError(f"unknown SanaWMConfig field(s) {unknown}; known: {sorted(known)}")
    return dataclasses.replace(PRESETS[name], **overrides)


def build_preset(name: str, device=None, **overrides):
    """An un-initialised `SanaWMTransformer` of the named preset (use `device="meta"` to
    inspect shapes without allocating, and `model.init_weights()` to train from scratch)."""
    from sanawm.model.transformer import SanaWMTransformer

    return SanaWMTransformer(preset_config(name, **overrides), device=device)


__all__ = ["SanaWMConfig", "PRESETS", "build_preset", "preset_config", "every_nth"]
