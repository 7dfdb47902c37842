"""The refiner's sliding attention window: `[sink | history | active block]` K/V per layer.

SANA-WM's stage-2 refiner denoises a few latent frames at a time. Each video self-attention
layer of the LTX-2 DiT lets the active block's queries see three groups of keys:

- sink: the raw stage-1 frame(s) at the start of the clip. Their keys are kept *before* RoPE so
  that each block can place them at the temporal position just before its history (the model
  was trained with the sink sliding along with the window);
- history: the *post*-RoPE keys of the last refined frames (at most `kv_max_frames - sink_size`
  frames), written by one extra pass over each refined block at sigma 0;
- the active block itself.

All three live in one preallocated buffer per layer, so a forward pass writes only its own
block's K/V and attends to a prefix slice of the buffer; nothing is concatenated per step.
Softmax attention without a mask does not care about key order, so the history is kept in
arrival order and shifted left when the window slides.

`WindowedSelfAttention` is an attention processor for diffusers' `LTX2Attention`: it is put on
`attn1` of every block for the duration of a refinement (`windowed_self_attention`), and the
rest of the transformer runs unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_ltx2 import (
    apply_interleaved_rotary_emb,
    apply_split_rotary_emb,
)

Rope = tuple[torch.Tensor, torch.Tensor]


class Phase(enum.Enum):
    SINK = "sink"
    """Plain self-attention over the sink frames; their pre-RoPE keys and values are kept."""
    DENOISE = "denoise"
    """The active block attends to [sink | history | block]; the window does not change."""
    COMMIT = "commit"
    """As DENOISE; afterwards `SlidingWindow.commit` turns the block's K/V into history."""


@dataclass
class LayerKV:
    """One layer's buffer: keys/values (B, capacity, D) laid out as [sink | history | block]."""

    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    sink_keys: torch.Tensor | None = None
    """Pre-RoPE sink keys (B, sink_tokens, D)."""


@dataclass
class SlidingWindow:
    """Token bookkeeping shared by all layers, plus each layer's buffer."""

    num_layers: int
    sink_tokens: int
    max_history_tokens: int
    block_tokens: int
    """The most tokens one block can hold (a short last block holds fewer)."""
    phase: Phase = Phase.SINK
    history_tokens: int = 0
    layers: list[LayerKV] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.layers = [LayerKV() for _ in range(self.num_layers)]

    @property
    def capacity(self) -> int:
        return self.sink_tokens + self.max_history_tokens + self.block_tokens

    @property
    def prefix_tokens(self) -> int:
        """Keys in front of the active block: sink + history."""
        return self.sink_tokens + self.history_tokens

    def place_sink(self, rope: Rope, rope_type: str) -> None:
        """Rotate the pre-RoPE sink keys to `rope` (the sink's positions for the next block)."""
        rotate = _rotation(rope_type)
        for layer in self.layers:
            layer.keys[:, : self.sink_tokens] = rotate(layer.sink_keys, rope)

    def commit(self, block_tokens: int) -> None:
        """The block just written (by a COMMIT pass) becomes the newest history; the oldest
        history tokens beyond `max_history_tokens` leave the window."""
        self.history_tokens += block_tokens
        drop = self.history_tokens - self.max_history_tokens
        if drop > 0:
            keep = self.max_history_tokens
            old = slice(self.sink_tokens + drop, self.sink_tokens + drop + keep)
            new = slice(self.sink_tokens, self.sink_tokens + keep)
            for layer in self.layers:
                # The two ranges overlap: copy out before writing back.
                layer.keys[:, new] = layer.keys[:, old].clone()
                layer.values[:, new] = layer.values[:, old].clone()
            self.history_tokens = keep


class WindowedSelfAttention:
    """Attention processor for `attn1` of one LTX-2 block, reading and writing `window`."""

    def __init__(self, window: SlidingWindow, layer: int) -> None:
        self.window = window
        self.layer = window.layers[layer]

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        query_rotary_emb: Rope | None = None,
        key_rotary_emb: Rope | None = None,
    ) -> torch.Tensor:
        assert encoder_hidden_states is None and attention_mask is None, "windowed attention is self-attention only"
        window, layer = self.window, self.layer
        rotate = _rotation(attn.rope_type)
        gate_logits = attn.to_gate_logits(hidden_states) if attn.to_gate_logits is not None else None

        query = rotate(attn.norm_q(attn.to_q(hidden_states)), query_rotary_emb)
        key = attn.norm_k(attn.to_k(hidden_states))
        value = attn.to_v(hidden_states)

        if window.phase is Phase.SINK:
            assert key.shape[1] == window.sink_tokens, "the sink pass must hold exactly the sink frames"
            layer.sink_keys = key
            layer.keys = key.new_empty(key.shape[0], window.capacity, key.shape[2])
            layer.values = value.new_empty(value.shape[0], window.capacity, value.shape[2])
            layer.values[:, : window.sink_tokens] = value
            keys, values = rotate(key, query_rotary_emb), value
        else:
            start = window.prefix_tokens
            stop = start + key.shape[1]
            assert stop <= window.capacity, "block larger than the window was sized for"
            layer.keys[:, start:stop] = rotate(key, query_rotary_emb)
            layer.values[:, start:stop] = value
            keys, values = layer.keys[:, :stop], layer.values[:, :stop]

        out = dispatch_attention_fn(
            query.unflatten(2, (attn.heads, -1)),
            keys.unflatten(2, (attn.heads, -1)),
            values.unflatten(2, (attn.heads, -1)),
            attn_mask=None,
            dropout_p=0.0,
            is_causal=False,
        )
        if gate_logits is not None:
            out = out * (2.0 * torch.sigmoid(gate_logits)).unsqueeze(-1)
        out = out.flatten(2, 3).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))


@contextmanager
def windowed_self_attention(transformer, window: SlidingWindow) -> Iterator[None]:
    """Route every block's video self-attention through `window` while the context is open."""
    blocks = transformer.transformer_blocks
    assert len(blocks) == window.num_layers
    saved = [block.attn1.processor for block in blocks]
    for index, block in enumerate(blocks):
        block.attn1.set_processor(WindowedSelfAttention(window, index))
    try:
        yield
    finally:
        for block, processor in zip(blocks, saved):
            block.attn1.set_processor(processor)


def _rotation(rope_type: str):
    if rope_type == "interleaved":
        return apply_interleaved_rotary_emb
    if rope_type == "split":
        return apply_split_rotary_emb
    raise ValueError(f"unknown LTX-2 RoPE type {rope_type!r}")
