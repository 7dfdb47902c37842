"""Loading released SANA-WM stage-1 weights.

Accepted: a safetensors or torch file, or a state dict, in the release format (keys such as
`blocks.0.attn.qkv.weight`) or the diffusers format (the same keys under `_inner.`). The
architecture is read off the tensor shapes; `pos_embed` (an unused 2D sin-cos table) is
ignored. Anything missing, unexpected or of the wrong shape is reported in one error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from sanawm.errors import UserInputError
from sanawm.model.config import preset_config
from sanawm.model.transformer import SanaWMTransformer

IGNORED_KEYS = ("pos_embed",)
DIFFUSERS_PREFIX = "_inner."


def _read(source) -> dict[str, Tensor]:
    if isinstance(source, Mapping):
        state = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise UserInputError(f"checkpoint {str(path)!r} does not exist or is not a file")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            try:
                state = load_file(str(path))
            except Exception as err:  # corrupt / not safetensors
                raise UserInputError(f"cannot read {str(path)!r} as safetensors: {err}") from err
        else:
            try:
                state = torch.load(str(path), map_location="cpu", weights_only=True)
            except Exception as err:
                raise UserInputError(f"cannot read {str(path)!r} as a torch checkpoint: {err}") from err
            if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
                state = dict(state["state_dict"])
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserInputError("checkpoint must map parameter names to tensors")
    if state and all(k.startswith(DIFFUSERS_PREFIX) for k in state):
        state = {k[len(DIFFUSERS_PREFIX) :]: v for k, v in state.items()}
    return {k: v for k, v in state.items() if k not in IGNORED_KEYS}


def infer_config_fields(state: Mapping[str, Tensor]) -> dict:
    """Architecture fields readable from tensor shapes (those whose keys are present)."""
    fields: dict = {}

    def shape(key: str):
        t = state.get(key)
        return None if t is None else tuple(t.shape)

    if (s := shape("x_embedder.proj.weight")) and len(s) == 5:
        fields["hidden_size"], fields["in_channels"] = s[0], s[1]
    if (s := shape("y_embedder.y_proj.fc1.weight")) and len(s) == 2:
        fields["caption_channels"] = s[1]
    if (s := shape("y_embedder.y_embedding")) and len(s) == 2:
        fields["max_text_len"] = s[0]
    if (s := shape("plucker_embedder.proj.weight")) and len(s) == 5:
        fields["plucker_channels"] = s[1]
    block_ids = sorted({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    if block_ids:
        depth = block_ids[-1] + 1
        fields["depth"] = depth
        fields["softmax_blocks"] = tuple(
            i for i in range(depth) if any(k.startswith(f"blocks.{i}.") for k in state)
            and f"blocks.{i}.attn.conv_k.weight" not in state
        )  # fmt: skip
        b = block_ids[0]
        heads = shape(f"blocks.{b}.attn.beta_proj.weight")
        if heads and "hidden_size" in fields and fields["hidden_size"] % heads[0] == 0:
            fields["head_dim"] = fields["hidden_size"] // heads[0]
        inv = shape(f"blocks.{b}.mlp.inverted_conv.conv.weight")
        if inv and "hidden_size" in fields:
            fields["mlp_ratio"] = inv[0] / 2 / fields["hidden_size"]
        if (s := shape(f"blocks.{b}.mlp.t_conv.weight")) and len(s) == 4:
            fields["ffn_temporal_kernel"] = s[2]
        gdn_blocks = [i for i in block_ids if f"blocks.{i}.attn.conv_k.weight" in state]
        if gdn_blocks and (s := shape(f"blocks.{gdn_blocks[0]}.attn.conv_k.weight")) and len(s) == 3:
            fields["key_conv_kernel"] = s[2]
    return fields


def check_state_dict(model: torch.nn.Module, state: Mapping[str, Tensor]) -> None:
    """Raise one UserInputError listing missing, unexpected and mis-shaped tensors."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k}: file {tuple(state[k].shape)}, model {expected[k]}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != expected[k]
    )
    if missing or unexpected or wrong:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                shown = ", ".join(items[:20]) + (f", ... ({len(items)} in all)" if len(items) > 20 else "")
                parts.append(f"{title}: {shown}")
        raise UserInputError("checkpoint does not match the SANA-WM architecture; " + "; ".join(parts))


def load_official(
    source: str | Path | Mapping[str, Tensor],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    **overrides,
) -> SanaWMTransformer:
    """Build a `SanaWMTransformer` from released weights (file path or state dict).

    The config is inferred from the shapes; `overrides` set other `SanaWMConfig` fields
    (e.g. `softmax_attn_dtype=None`) or override inferred ones. Weights are cast to `dtype`.
    """
    state = _read(source)
    fields = infer_config_fields(state)
    fields.update(overrides)
    try:
        config = preset_config("sanawm-2.6b", **fields)
    except UserInputError as err:
        raise UserInputError(f"cannot infer a valid architecture from the checkpoint: {err}") from err
    model = SanaWMTransformer(config, device="meta")
    check_state_dict(model, state)
    model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state.items()}, assign=True)
    return model.eval()


__all__ = ["load_official", "check_state_dict", "infer_config_fields"]
