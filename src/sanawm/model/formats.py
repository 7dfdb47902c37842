"""The three key layouts of released SANA-WM stage-1 weights, and diffusers' transformer config.

- "release": the NVlabs checkpoint (`SANA-WM_bidirectional`), our parameter names plus an
  unused `pos_embed` table.
- "pr": the diffusers pull request's port: the release keys under an `_inner.` prefix.
- "diffusers": diffusers 0.42 `SanaWMTransformer3DModel`: the release keys with the timestep
  MLP renamed (`t_embedder.mlp.0/2` -> `t_embedder.linear_1/2`), and without `pos_embed` and
  the null-caption embedding `y_embedder.y_embedding` (its pipeline encodes "" instead).

The diffusers `config.json` of that class maps onto `SanaWMConfig` for the architectures both
can express (`config_from_diffusers`, `diffusers_config`).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from sanawm.errors import UserInputError
from sanawm.model.config import SanaWMConfig, every_nth

FORMATS = ("release", "pr", "diffusers")
PR_PREFIX = "_inner."
NULL_CAPTION_KEY = "y_embedder.y_embedding"
UNUSED_KEYS = ("pos_embed",)  # a 2D sin-cos table the 3D-RoPE model never reads
_RENAMES = (("t_embedder.mlp.0.", "t_embedder.linear_1."), ("t_embedder.mlp.2.", "t_embedder.linear_2."))
DIFFUSERS_CLASS = "SanaWMTransformer3DModel"


def detect_format(state: Mapping[str, Tensor]) -> str:
    """"release", "pr" or "diffusers", from the key names; anything else raises."""
    keys = list(state)
    if keys and all(k.startswith(PR_PREFIX) for k in keys):
        return "pr"
    release = any(k.startswith(_RENAMES[0][0]) for k in keys)
    diffusers = any(k.startswith(_RENAMES[0][1]) for k in keys)
    if release != diffusers:
        return "release" if release else "diffusers"
    raise UserInputError(
        "cannot tell the checkpoint's key format: expected the timestep MLP as t_embedder.mlp.0 "
        "(release, optionally under '_inner.') or t_embedder.linear_1 (diffusers)"
        + (", found both" if release else ", found neither")
    )


def to_release_keys(state: Mapping[str, Tensor], fmt: str) -> dict[str, Tensor]:
    """State dict of format `fmt` -> release names, without the unused `pos_embed`."""
    if fmt == "pr":
        state = {k[len(PR_PREFIX) :]: v for k, v in state.items()}
    elif fmt == "diffusers":
        state = {_rename(k, new_to_old=True): v for k, v in state.items()}
    elif fmt != "release":
        raise ValueError(f"unknown format {fmt!r}")
    return {k: v for k, v in state.items() if k not in UNUSED_KEYS}


def to_diffusers_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Release names -> diffusers 0.42 names (the null caption and `pos_embed` left out)."""
    return {_rename(k, new_to_old=False): v for k, v in state.items() if k not in (NULL_CAPTION_KEY, *UNUSED_KEYS)}


def _rename(key: str, new_to_old: bool) -> str:
    for old, new in _RENAMES:
        src, dst = (new, old) if new_to_old else (old, new)
        if key.startswith(src):
            return dst + key[len(src) :]
    return key


# ---- diffusers config.json <-> SanaWMConfig -------------------------------------------------

# Settings of diffusers' class that our model implements only at these values (the release's).
_FIXED = {
    "patch_size": [1, 1, 1],
    "ffn_type": "GLUMBConvTemp",
    "k_conv_only": True,
    "pos_embed_type": "wan_rope",
    "qk_norm": True,
    "cross_norm": True,
    "y_norm": True,
    "cam_attn_compress": 1,
    "use_chunk_plucker_post_attn": True,
    "mlp_acts": ["silu", "silu", None],
    "use_pe": True,
    "pred_sigma": False,
}
# Our numerics that diffusers' class hard-codes (to the release's values, our defaults).
_HARD_CODED = ("rope_theta", "attn_norm_eps", "cross_norm_eps", "gdn_eps")


def config_from_diffusers(doc: Mapping, where: str) -> dict:
    """`SanaWMConfig` fields from a diffusers `SanaWMTransformer3DModel` config.json."""
    cls = doc.get("_class_name", DIFFUSERS_CLASS)
    if cls != DIFFUSERS_CLASS:
        raise UserInputError(f"{where}: a {cls!r} config, not {DIFFUSERS_CLASS!r}")
    unsupported = [
        f"{key}={doc[key]!r} (supported: {value!r})"
        for key, value in _FIXED.items()
        if key in doc and _as_list(doc[key]) != _as_list(value)
    ]
    try:
        depth = int(doc.get("num_layers", 20))
        every = int(doc.get("softmax_every_n", 4))
        post_blocks = int(doc.get("chunk_plucker_post_attn_blocks", 20))
        fields = {
            "depth": depth,
            "hidden_size": int(doc.get("hidden_size", 2240)),
            "head_dim": int(doc.get("linear_head_dim", 112)),
            "in_channels": int(doc.get("in_channels", 128)),
            "caption_channels": int(doc.get("caption_channels", 2304)),
            "softmax_blocks": every_nth(depth, every) if every > 0 else (),
            "mlp_ratio": float(doc.get("mlp_ratio", 3.0)),
            "ffn_temporal_kernel": int(doc.get("t_kernel_size", 3)),
            "key_conv_kernel": int(doc.get("conv_kernel_size", 4)),
            "plucker_channels": int(doc.get("chunk_plucker_channels", 48)),
        }
        heads = int(doc.get("num_attention_heads", fields["hidden_size"] // fields["head_dim"]))
    except (TypeError, ValueError) as err:
        raise UserInputError(f"{where}: malformed transformer config: {err}") from None
    if heads * fields["head_dim"] != fields["hidden_size"]:
        unsupported.append(f"num_attention_heads={heads} with linear_head_dim={fields['head_dim']} "
                           f"(heads x head width must equal hidden_size={fields['hidden_size']})")  # fmt: skip
    if 0 <= post_blocks < depth:
        unsupported.append(f"chunk_plucker_post_attn_blocks={post_blocks} (Plücker rays in every block only)")
    if unsupported:
        raise UserInputError(f"{where}: settings this implementation does not support: " + "; ".join(unsupported))
    return fields


def diffusers_config(config: SanaWMConfig) -> dict:
    """The diffusers `SanaWMTransformer3DModel` config.json of a model with `config`."""
    every = _softmax_period(config)
    defaults = SanaWMConfig()
    differ = [name for name in _HARD_CODED if getattr(config, name) != getattr(defaults, name)]
    if every is None or differ:
        why = [f"softmax blocks {config.softmax_blocks} are not every n-th block"] if every is None else []
        why += [f"{name}={getattr(config, name)} (diffusers fixes {getattr(defaults, name)})" for name in differ]
        raise UserInputError("this model cannot be written in the diffusers format: " + "; ".join(why))
    return {
        "_class_name": DIFFUSERS_CLASS,
        "in_channels": config.in_channels,
        "num_layers": config.depth,
        "hidden_size": config.hidden_size,
        "num_attention_heads": config.num_heads,
        "linear_head_dim": config.head_dim,
        "softmax_every_n": every,
        "t_kernel_size": config.ffn_temporal_kernel,
        "conv_kernel_size": config.key_conv_kernel,
        "chunk_plucker_channels": config.plucker_channels,
        "chunk_plucker_post_attn_blocks": config.depth,
        "caption_channels": config.caption_channels,
        "mlp_ratio": config.mlp_ratio,
        **_FIXED,
    }


def _softmax_period(config: SanaWMConfig) -> int | None:
    """n with softmax_blocks == every n-th block (0: none), or None when there is no such n."""
    if not config.softmax_blocks:
        return 0
    n = config.softmax_blocks[0] + 1
    return n if every_nth(config.depth, n) == config.softmax_blocks else None


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else value


__all__ = [
    "FORMATS",
    "NULL_CAPTION_KEY",
    "PR_PREFIX",
    "config_from_diffusers",
    "detect_format",
    "diffusers_config",
    "to_diffusers_keys",
    "to_release_keys",
]
