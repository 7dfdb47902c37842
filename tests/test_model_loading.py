"""Checkpoint format: preset shapes vs the public key list, loading and its error reports."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sanawm.errors import UserInputError
from sanawm.model import build_preset, load_official

DATA = Path(__file__).parent / "data"
TINY = DATA / "public_tiny_state.safetensors"


def test_2p6b_preset_has_the_release_tensors():
    official = {k: tuple(v) for k, v in json.loads((DATA / "official_2p6b_keys.json").read_text()).items()}
    model = build_preset("sanawm-2.6b", device="meta")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # pos_embed is a leftover 2D sin-cos table the model never reads; the loader drops it.
    assert ours == {k: v for k, v in official.items() if k != "pos_embed"}
    assert sum(p.numel() for p in model.parameters()) == 2_661_800_448
    buffers = {name for name, _ in model.named_buffers()}
    assert buffers == {"y_embedder.y_embedding"} | {f"blocks.{i}.attn.recall_gate" for i in range(20)}
    assert model.config.softmax_blocks == (3, 7, 11, 15, 19)


def test_tiny_config_is_inferred_from_shapes():
    model = load_official(TINY)
    cfg = model.config
    assert (cfg.depth, cfg.hidden_size, cfg.num_heads, cfg.in_channels) == (4, 224, 2, 16)
    assert (cfg.caption_channels, cfg.max_text_len, cfg.softmax_blocks) == (64, 12, (3,))
    assert (cfg.mlp_ratio, cfg.ffn_temporal_kernel, cfg.key_conv_kernel, cfg.plucker_channels) == (3.0, 3, 4, 48)
    assert next(model.parameters()).dtype == torch.float32


def test_state_dict_round_trips_and_formats(tmp_path):
    state = load_file(TINY)
    model = load_official(state)
    ours = model.state_dict()
    for k, v in ours.items():
        assert torch.equal(v, state[k].float()), k
    # the diffusers PR's format (`_inner.` prefix) in a torch file, and our own state dict, load the same
    torch.save({f"_inner.{k}": v for k, v in state.items()}, tmp_path / "diffusers.pt")
    again = load_official(tmp_path / "diffusers.pt")
    save_file(ours, tmp_path / "ours.safetensors")
    third = load_official(tmp_path / "ours.safetensors", dtype=torch.float64)
    for k, v in ours.items():
        assert torch.equal(again.state_dict()[k], v)
        assert torch.equal(third.state_dict()[k], v.double())


def test_overrides_reach_the_config():
    model = load_official(TINY, softmax_attn_dtype=None)
    assert model.config.softmax_attn_dtype is None
    with pytest.raises(UserInputError, match="unknown SanaWMConfig field"):
        load_official(TINY, no_such_field=1)


def test_mismatches_are_reported_in_one_error():
    state = load_file(TINY)
    del state["blocks.1.attn.dt_bias"]
    state["blocks.0.extra.weight"] = torch.zeros(3)
    state["blocks.2.mlp.t_conv.weight"] = torch.zeros(224, 224, 5, 1)
    with pytest.raises(UserInputError) as err:
        load_official(state)
    msg = str(err.value)
    assert "missing: blocks.1.attn.dt_bias" in msg
    assert "unexpected: blocks.0.extra.weight" in msg
    assert "wrong shape: blocks.2.mlp.t_conv.weight: file (224, 224, 5, 1), model (224, 224, 3, 1)" in msg


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda s: s.pop("final_layer.linear.bias"), "missing: final_layer.linear.bias"),
        (lambda s: s.update({"foo": torch.zeros(1)}), "unexpected: foo"),
        (lambda s: s.update({"attention_y_norm.weight": torch.zeros(5)}), "wrong shape: attention_y_norm.weight"),
    ],
)
def test_each_kind_of_mismatch(mutate, expected):
    state = load_file(TINY)
    mutate(state)
    with pytest.raises(UserInputError, match=expected):
        load_official(state)


def test_unreadable_sources(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_official(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(UserInputError, match="cannot read"):
        load_official(bad)
    with pytest.raises(UserInputError, match="map parameter names to tensors"):
        load_official({"x": 1})
