"""Loading and saving released SANA-WM stage-1 weights.

`load_official(source)` accepts a state dict, a safetensors / torch file, or a folder (a
diffusers `transformer/` folder, a sharded checkpoint with a `*.safetensors.index.json`, or
one safetensors file), in any of the key formats of `sanawm.model.formats` (release, the
diffusers PR's `_inner.` prefix, diffusers 0.42), which it recognises from the key names. The
architecture is read off the tensor shapes (and checked against a diffusers `config.json`
when the folder has one). diffusers 0.42 files hold no null-caption embedding; the caller
chooses what to use instead (`null_caption`). Anything missing, unexpected or of the wrong
shape is reported in one error. `save_official` writes the release or the diffusers format.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from sanawm.errors import UserInputError
from sanawm.jsonfile import read_json_object
from sanawm.model.config import preset_config
from sanawm.model.formats import (
    NULL_CAPTION_KEY,
    PR_PREFIX,
    config_from_diffusers,
    detect_format,
    diffusers_config,
    to_diffusers_keys,
    to_release_keys,
)
from sanawm.model.transformer import SanaWMTransformer

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
CONFIG_JSON = "config.json"


def read_checkpoint(source) -> tuple[dict[str, Tensor], str, dict]:
    """(state dict in release names, its format, config fields from a diffusers config.json)."""
    fields: dict = {}
    if isinstance(source, Mapping):
        state = dict(source)
        where = "the state dict"
    else:
        path = Path(source)
        where = str(path)
        if path.is_dir():
            state = _read_folder(path)
            if (path / CONFIG_JSON).is_file():
                fields = config_from_diffusers(read_json_object(path / CONFIG_JSON, "transformer config"),
                                               str(path / CONFIG_JSON))  # fmt: skip
        elif path.is_file():
            state = _read_file(path)
        else:
            raise UserInputError(f"checkpoint {where!r} does not exist")
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserInputError("checkpoint must map parameter names to tensors")
    try:
        fmt = detect_format(state)
    except UserInputError as err:
        raise UserInputError(f"{where}: {err}") from None
    return to_release_keys(state, fmt), fmt, fields


def _read_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # corrupt / not safetensors
            raise UserInputError(f"cannot read {str(path)!r} as safetensors: {err}") from err
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserInputError(f"cannot read {str(path)!r} as a torch checkpoint: {err}") from err
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = dict(state["state_dict"])
    return state


def _read_folder(path: Path) -> dict[str, Tensor]:
    """The shards named by the folder's one `*.safetensors.index.json`, or its one safetensors file."""
    indexes = sorted(path.glob("*.safetensors.index.json"))
    files = sorted(path.glob("*.safetensors"))
    if len(indexes) > 1 or (not indexes and len(files) != 1):
        found = ", ".join(p.name for p in indexes or files) or "none"
        raise UserInputError(
            f"{path}: expected one *.safetensors.index.json or one *.safetensors file, found {found}"
        )
    if not indexes:
        return _read_file(files[0])
    index = read_json_object(indexes[0], "checkpoint index")
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise UserInputError(f"{indexes[0]}: 'weight_map' must map tensor names to shard files")
    state: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = path / shard
        if not shard_path.is_file():
            raise UserInputError(f"{indexes[0]}: shard {shard!r} not found")
        state.update(_read_file(shard_path))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise UserInputError(f"{indexes[0]}: tensors listed but not in their shards: {', '.join(missing[:10])}")
    return state


def null_caption_from(choice, caption_channels: int, max_text_len: int) -> Tensor:
    """The null-caption embedding (max_text_len, caption_channels) the caller chose: "zeros",
    a tensor, or a file / folder holding `y_embedder.y_embedding` (any key format) or one tensor."""
    if isinstance(choice, str) and choice == "zeros":
        return torch.zeros(max_text_len, caption_channels)
    if isinstance(choice, Tensor):
        table, where = choice, "null_caption"
    elif isinstance(choice, (str, Path)):
        path = Path(choice)
        if path.is_dir():
            state = _read_folder(path)
        elif path.is_file():
            state = _read_file(path)
        else:
            raise UserInputError(f"null-caption file {str(path)!r} does not exist")
        where = str(path)
        tables = [v for k, v in state.items() if k in (NULL_CAPTION_KEY, PR_PREFIX + NULL_CAPTION_KEY)]
        if not tables and len(state) == 1:
            tables = list(state.values())
        if len(tables) != 1:
            raise UserInputError(f"{where}: holds no {NULL_CAPTION_KEY} (and is not a single tensor)")
        table = tables[0]
    else:
        raise UserInputError(f"null_caption must be 'zeros', a tensor or a file path, got {type(choice).__name__}")
    if table.dim() != 2 or table.shape[1] != caption_channels:
        raise UserInputError(
            f"{where}: the null caption must be (L, {caption_channels}), got {tuple(table.shape)}"
        )
    return table


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
    null_caption: str | Path | Tensor | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    **overrides,
) -> SanaWMTransformer:
    """Build a `SanaWMTransformer` from released weights (see the module doc for `source`).

    The config is inferred from the shapes; `overrides` set other `SanaWMConfig` fields
    (e.g. `softmax_attn_dtype=None`, `camera_rms_clamp=True`) or override inferred ones.
    `null_caption` is what to use when the weights have no null-caption embedding (diffusers
    0.42 files), and is then required: "zeros" (a table of `max_text_len` rows, 300 unless
    overridden), a tensor, or a file holding one (e.g. the release checkpoint); a table in the
    weights themselves always wins. The embedding only matters for models used without a text
    encoder. Weights are cast to `dtype`.
    """
    state, fmt, fields = read_checkpoint(source)
    inferred = infer_config_fields(state)
    clash = sorted(f"{k}: config.json {fields[k]!r}, tensors {inferred[k]!r}" for k in set(fields) & set(inferred)
                   if fields[k] != inferred[k])  # fmt: skip
    if clash:
        raise UserInputError("the checkpoint's config.json does not match its tensors: " + "; ".join(clash))
    fields.update(inferred)
    fields.update(overrides)
    if NULL_CAPTION_KEY not in state:
        if null_caption is None:
            raise UserInputError(
                f"the checkpoint ({fmt} format) has no null-caption embedding ({NULL_CAPTION_KEY}); "
                "choose one: null_caption='zeros' or null_caption=<a file that holds it, e.g. the "
                "release checkpoint>"
            )
        caption_channels = fields.get("caption_channels", preset_config("sanawm-2.6b").caption_channels)
        max_len = fields.get("max_text_len", preset_config("sanawm-2.6b").max_text_len)
        state[NULL_CAPTION_KEY] = null_caption_from(null_caption, caption_channels, max_len)
        fields["max_text_len"] = state[NULL_CAPTION_KEY].shape[0]
    try:
        config = preset_config("sanawm-2.6b", **fields)
    except UserInputError as err:
        raise UserInputError(f"cannot infer a valid architecture from the checkpoint: {err}") from err
    model = SanaWMTransformer(config, device="meta")
    check_state_dict(model, state)
    model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state.items()}, assign=True)
    return model.eval()


def save_official(model: SanaWMTransformer, path: str | Path, format: str = "release") -> Path:
    """Write a model's weights in a released format.

    "release": one safetensors file at `path` (the NVlabs key names; the unused `pos_embed`
    table is not written). "diffusers": a folder at `path` that diffusers 0.42
    `SanaWMTransformer3DModel.from_pretrained` loads (`config.json` +
    `diffusion_pytorch_model.safetensors`; no null-caption embedding, as diffusers keeps none).
    Note that diffusers always runs the camera branch with `camera_rms_clamp=True`.
    """
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if format == "release":
        if path.suffix != ".safetensors":
            raise UserInputError(f"a release checkpoint is one .safetensors file, got {str(path)!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path), metadata={"format": "pt"})
    elif format == "diffusers":
        config = diffusers_config(model.config)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_JSON).write_text(json.dumps(config, indent=2) + "\n")
        save_file(to_diffusers_keys(state), str(path / DIFFUSERS_WEIGHTS), metadata={"format": "pt"})
    else:
        raise UserInputError(f"unknown checkpoint format {format!r}; choose 'release' or 'diffusers'")
    return path


__all__ = ["load_official", "save_official", "read_checkpoint", "check_state_dict", "infer_config_fields"]
