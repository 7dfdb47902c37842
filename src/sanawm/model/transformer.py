"""The SANA-WM stage-1 diffusion transformer (`SanaWMTransformer`).

Inputs per call (B clips, T latent frames of H x W latent pixels, one token per pixel):
latents (B, C, T, H, W), a timestep per frame, text hidden states with a mask, a raymap
(B, T, 20) and chunk-Plücker rays (B, P, T, H, W), P = `config.plucker_channels` (48 in the
release). Output: the flow-matching velocity `noise - data` (B, C, T, H, W), which the
sampler's Euler step (`sanawm.sampling.schedule`) integrates as it is.

Temporal structure:
- default: fully bidirectional over the T frames (the public release);
- chunk-causal (`chunk_size` / `chunk_starts`): frames see earlier chunks and their own
  chunk only (GDN forward scans run over everything, reverse scans stay in the chunk,
  softmax attention is block-causal, the short convs see no later chunk);
- streaming: `cache = model.new_stream_cache()`; `model(chunk..., cache=cache)` reads the
  committed frames without changing the cache (call it as often as the sampler needs), and
  `model.commit_to_cache(cache, chunk...)` (or `update_cache=True`) appends the chunk.
  Chunk by chunk this computes exactly the one-shot chunk-causal forward;
  `new_stream_cache(window, sink)` bounds what the softmax blocks keep (see `StreamCache`).

Sequence parallelism (`model.sequence_parallel = SequenceParallel...`, see
`sanawm.parallel.sequence`): every rank of the group calls the model with the same full
inputs; each computes a band of latent rows, and every rank gets the full output. A stream
cache then holds this rank's share (its rows' contexts, its heads' states and keys / values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from sanawm.chunks import chunk_starts_for, valid_chunk_starts
from sanawm.model.attention import (
    OUTPUT_GATE_INIT_BIAS,
    CallContext,
    GDNAttention,
    GDNPast,
    KeyConv,
    SoftmaxPast,
)
from sanawm.model.block import BlockPast, SanaWMBlock
from sanawm.model.camera import camera_transforms, ray_frames
from sanawm.model.config import SanaWMConfig
from sanawm.model.layers import (
    CaptionEmbedder,
    FinalLayer,
    PatchEmbed,
    RMSNorm,
    TimestepEmbedder,
    text_logit_bias,
)
from sanawm.model.rope import camera_rope_angles, rope_angles, rotation
from sanawm.text import TextEmbedding

if TYPE_CHECKING:
    from sanawm.parallel.sequence import SequenceParallel

RAYMAP_WIDTH = 20  # 16 values of a row-major 4x4 camera-to-world + fx, fy, cx, cy


class StreamCache:
    """Per-block memory of the frames committed so far (see `SanaWMTransformer`).

    GDN blocks hold forward states and the last raw keys (constant size); every block holds
    the last FFN frames. Softmax blocks (main and camera branch) hold the keys / values of
    the committed frames they may still attend to:

    - `window=None`: every committed frame (memory grows with the clip);
    - `window=n`: an attention sink, the first `sink` latent frames of the stream, plus the
      last `n` committed chunks (one `commit` = one chunk). Keys keep the RoPE / camera
      transforms of their absolute frame index, so a window longer than the clip computes
      exactly what the unbounded cache does.
    """

    def __init__(self, depth: int, window: int | None = None, sink: int = 0):
        assert window is None or window >= 0, window
        assert sink >= 0, sink
        self.blocks: list[BlockPast | None] = [None] * depth
        self.num_frames = 0
        self.shape: tuple[int, int, int] | None = None  # (batch, height, width)
        self.window = window
        self.sink = sink
        self.chunk_starts: list[int] = []
        """First frame of every committed chunk."""
        self.held_frames: list[int] = []
        """Absolute indices of the frames the softmax blocks hold, in cache order."""

    def commit(self, new_past: list[BlockPast | None], frames: int) -> None:
        """Take the blocks' state after a chunk of `frames` frames, then drop the softmax
        keys / values that fell out of the window."""
        self.blocks = new_past
        self.chunk_starts.append(self.num_frames)
        self.held_frames += range(self.num_frames, self.num_frames + frames)
        self.num_frames += frames
        keep = self.frames_to_keep()
        if len(keep) < len(self.held_frames):
            position = {f: i for i, f in enumerate(self.held_frames)}
            spans = _spans([position[f] for f in keep])
            for past in self.blocks:
                if past is not None and isinstance(past.attn, SoftmaxPast):
                    past.attn = _select_frames(past.attn, spans, self.shape[1] * self.shape[2])
            self.held_frames = keep
        if self.window is not None:  # only the window's chunk starts are read again
            del self.chunk_starts[: max(0, len(self.chunk_starts) - self.window)]

    def frames_to_keep(self) -> list[int]:
        """The frames the softmax blocks keep now: the sink plus the last `window` chunks."""
        if self.window is None:
            return list(self.held_frames)
        starts = self.chunk_starts
        recent = starts[max(0, len(starts) - self.window)] if self.window > 0 else self.num_frames
        return [f for f in self.held_frames if f < self.sink or f >= recent]

    def softmax_numel(self) -> int:
        """Elements held by the softmax blocks' keys and values."""
        total = 0
        for past in self.blocks:
            if past is not None and isinstance(past.attn, SoftmaxPast):
                a = past.attn
                total += sum(t.numel() for t in (a.k, a.v, a.cam_k, a.cam_v) if t is not None)
        return total

    def gdn_numel(self) -> int:
        """Elements held by the GDN blocks (states and key contexts): constant once the
        cache holds more frames than the key conv's kernel."""
        total = 0
        for past in self.blocks:
            if past is not None and isinstance(past.attn, GDNPast):
                a = past.attn
                parts = [a.state.kv, a.state.z, a.key_context]
                if a.cam_state is not None:
                    parts += [a.cam_state.kv, a.cam_key_context]
                total += sum(p.numel() for p in parts if p is not None)
        return total


def _spans(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted indices -> maximal runs [a, b) of consecutive ones."""
    spans: list[tuple[int, int]] = []
    for i in indices:
        if spans and spans[-1][1] == i:
            spans[-1] = (spans[-1][0], i + 1)
        else:
            spans.append((i, i + 1))
    return spans


def _select_frames(past: SoftmaxPast, spans: list[tuple[int, int]], tokens_per_frame: int) -> SoftmaxPast:
    """Keep the tokens of the held frames in `spans` (cloned, so the dropped ones are freed)."""

    def pick(t: Tensor | None) -> Tensor | None:
        if t is None:
            return None
        parts = [t[:, :, a * tokens_per_frame : b * tokens_per_frame] for a, b in spans]
        return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0].clone()

    return SoftmaxPast(pick(past.k), pick(past.v), pick(past.cam_k), pick(past.cam_v))


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


class SanaWMTransformer(nn.Module):
    """SANA-WM stage-1 DiT; parameter names match the public checkpoint (minus `pos_embed`)."""

    def __init__(self, config: SanaWMConfig, device=None):
        super().__init__()
        self.config = cfg = config
        C = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg.in_channels, C, device=device)
        self.t_embedder = TimestepEmbedder(C, device=device)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C, device=device))
        self.y_embedder = CaptionEmbedder(cfg.caption_channels, C, cfg.max_text_len, device=device)
        self.attention_y_norm = RMSNorm(C, cfg.attn_norm_eps, init=cfg.text_norm_init, device=device)
        self.plucker_embedder = PatchEmbed(cfg.plucker_channels, C, device=device)
        # Unused by the release's forward (its chunk-Plücker path replaces it); kept so the
        # checkpoint format round-trips.
        self.raymap_embedder = PatchEmbed(3, C, device=device)
        self.blocks = nn.ModuleList(
            SanaWMBlock(cfg, softmax=i in cfg.softmax_blocks, device=device) for i in range(cfg.depth)
        )
        self.final_layer = FinalLayer(C, cfg.in_channels, device=device)
        self.sequence_parallel: SequenceParallel | None = None
        """Spread every forward over this process group (`sanawm.parallel.sequence`)."""

    # ------------------------------------------------------------------------------------
    # Forward
    # ------------------------------------------------------------------------------------

    def forward(
        self,
        latents: Tensor,
        timestep: Tensor,
        text: Tensor,
        text_mask: Tensor | None = None,
        raymap: Tensor | None = None,
        chunk_plucker: Tensor | None = None,
        *,
        chunk_size: int | None = None,
        chunk_starts: Sequence[int] | None = None,
        cache: StreamCache | None = None,
        frame_offset: int | None = None,
        update_cache: bool = False,
    ) -> Tensor:
        """Velocity prediction (B, C, T, H, W).

        latents (B, C, T, H, W); timestep (B, T), (B, 1, T) or (B,) on the 0..1000 scale
        (truncated to integers, as the reference does; frame 0 of a clip is usually 0);
        text (B, L, C_text) or (B, 1, L, C_text); text_mask (B, L) 1 = token, 0 = padding
        (None: all tokens); raymap (B, T, 20); chunk_plucker (B, 48, T, H, W). Without
        raymap the camera branches are skipped, without chunk_plucker the Plücker injection.
        chunk_size / chunk_starts (at most one) make the call chunk-causal. cache: see the
        module doc; frame_offset is the index of the first frame (with a cache it must equal
        the committed frame count).
        """
        B, T, H, W = self._validate(latents, timestep, text, text_mask, raymap, chunk_plucker)
        starts = self._resolve_chunks(T, chunk_size, chunk_starts)
        offset = self._resolve_offset(cache, frame_offset, update_cache, (B, H, W))
        angles = self.rope_angles(T, H, W, offset, latents.device)
        pasts = cache.blocks if cache is not None else [None] * len(self.blocks)
        out, new_past = self.forward_core(
            latents, timestep, text, text_mask, raymap, chunk_plucker, angles, pasts, starts, update_cache
        )
        if update_cache:
            cache.shape = (B, H, W)
            cache.commit(new_past, T)
        return out

    def rope_angles(self, frames: int, height: int, width: int, frame_offset: int, device) -> Tensor:
        """RoPE angles (N, head_dim / 2), float64, of the tokens of frames frame_offset, ...
        (the only input of a forward that depends on the frame index)."""
        cfg = self.config
        return rope_angles(cfg.head_dim, frames, height, width, frame_offset=frame_offset, theta=cfg.rope_theta,
                           device=device)  # fmt: skip

    def forward_core(
        self,
        latents: Tensor,
        timestep: Tensor,
        text: Tensor,
        text_mask: Tensor | None,
        raymap: Tensor | None,
        chunk_plucker: Tensor | None,
        angles: Tensor,
        pasts: Sequence[BlockPast | None],
        chunk_starts: list[int] | None,
        commit: bool,
    ) -> tuple[Tensor, list[BlockPast | None]]:
        """`forward` after its checks: the velocity and every block's state after the call
        (None unless `commit`). Every input is a tensor (or None) whose shape alone fixes the
        work, so `sanawm.model.graphs` can capture this as a CUDA graph; `angles` is
        `rope_angles` of the call's frames, `pasts` the stream cache's blocks."""
        cfg = self.config
        B, _, T, H, W = latents.shape
        dtype = self.x_embedder.proj.weight.dtype
        shard = self.sequence_parallel.plan(H, W) if self.sequence_parallel is not None else None
        if shard is not None:  # this rank's rows; RoPE and cameras stay whole (see CallContext)
            latents = shard.local_rows(latents)
            chunk_plucker = shard.local_rows(chunk_plucker) if chunk_plucker is not None else None
        x = self.x_embedder(latents.to(dtype))
        camera = None
        if raymap is not None:
            cam_dtype = torch.float64 if dtype == torch.float64 else torch.float32
            p = ray_frames(raymap.to(cam_dtype), H, W).reshape(B, T * H * W, 4, 4)
            camera = camera_transforms(p, rotation(camera_rope_angles(angles, cfg.head_dim)))
        plucker = self.plucker_embedder(chunk_plucker.to(dtype)) if chunk_plucker is not None else None

        if timestep.dim() == 3:
            timestep = timestep[:, 0]
        timestep = timestep.reshape(B, -1).expand(B, T)
        t = self.t_embedder(timestep.long().float())  # (B, T, C)
        t_mod = self.t_block(t).unflatten(-1, (6, cfg.hidden_size))

        if text.dim() == 4:
            text = text[:, 0]
        y = self.attention_y_norm(self.y_embedder(text.to(dtype)))
        text_bias = text_logit_bias(text_mask) if text_mask is not None else None

        ctx = CallContext(H, W, rotation(angles), camera, chunk_starts, shard)
        new_past: list[BlockPast | None] = []
        for block, past in zip(self.blocks, pasts, strict=True):
            x, block_past = block(x, t_mod, y, text_bias, plucker, ctx, past, commit)
            new_past.append(block_past)

        out = self.final_layer(x, t)  # (B, T, S, C_out)
        if shard is not None:
            out = shard.gather_tokens(out)
        return out.reshape(B, T, H, W, -1).permute(0, 4, 1, 2, 3), new_past

    def new_stream_cache(self, window: int | None = None, sink: int = 0) -> StreamCache:
        """An empty cache for chunk-by-chunk generation; `window` / `sink`: see `StreamCache`."""
        return StreamCache(len(self.blocks), window, sink)

    def null_text(self, batch: int = 1) -> TextEmbedding:
        """The "no text" input: the learned null caption (batch, max_text_len, caption_channels)
        with a full mask. Models without a text encoder sample with it, and training feeds
        exactly it for clips without a caption (and for text dropout)."""
        table = self.y_embedder.y_embedding
        states = table.unsqueeze(0).expand(batch, -1, -1)
        mask = torch.ones(batch, table.shape[0], dtype=torch.long, device=table.device)
        return TextEmbedding(states, mask)

    @torch.no_grad()
    def commit_to_cache(
        self,
        cache: StreamCache,
        latents: Tensor,
        timestep: Tensor,
        text: Tensor,
        text_mask: Tensor | None = None,
        raymap: Tensor | None = None,
        chunk_plucker: Tensor | None = None,
    ) -> None:
        """Append a finished chunk (typically the clean latents with timestep 0) to the cache."""
        self.forward(latents, timestep, text, text_mask, raymap, chunk_plucker, cache=cache, update_cache=True)

    # ------------------------------------------------------------------------------------
    # Input checks: shapes only (asserts, no host syncs). User input is validated where it
    # enters (WorldModel, the CLI, the model-folder and trajectory readers); a failure here
    # is a bug in the caller and keeps its traceback.
    # ------------------------------------------------------------------------------------

    def _validate(self, latents, timestep, text, text_mask, raymap, chunk_plucker) -> tuple[int, int, int, int]:
        cfg = self.config
        assert latents.dim() == 5 and latents.shape[1] == cfg.in_channels, (
            f"latents must be (B, {cfg.in_channels}, T, H, W), got {_shape(latents)}")  # fmt: skip
        B, _, T, H, W = latents.shape
        assert min(B, T, H, W) >= 1, f"latents must not be empty, got {_shape(latents)}"
        assert timestep.shape in ((B,), (B, T), (B, 1, T)), (
            f"timestep must be (B, T) = ({B}, {T}), (B, 1, T) or (B,), got {_shape(timestep)}")  # fmt: skip
        ok_text = (text.dim() == 3 and text.shape[0] == B) or (text.dim() == 4 and text.shape[:2] == (B, 1))
        assert ok_text and text.shape[-1] == cfg.caption_channels and text.shape[-2] >= 1, (
            f"text must be (B, L, {cfg.caption_channels}) or (B, 1, L, {cfg.caption_channels}) "
            f"with B = {B}, got {_shape(text)}")  # fmt: skip
        L = text.shape[-2]
        assert text_mask is None or text_mask.shape == (B, L), (
            f"text_mask must be (B, L) = ({B}, {L}), got {_shape(text_mask)}")  # fmt: skip
        assert raymap is None or raymap.shape == (B, T, RAYMAP_WIDTH), (
            f"raymap must be (B, T, 20) = ({B}, {T}, 20), got {_shape(raymap)}")  # fmt: skip
        want = (B, cfg.plucker_channels, T, H, W)
        assert chunk_plucker is None or chunk_plucker.shape == want, (
            f"chunk_plucker must be (B, {cfg.plucker_channels}, T, H, W) = {want}, "
            f"got {_shape(chunk_plucker)}")  # fmt: skip
        return B, T, H, W

    @staticmethod
    def _resolve_chunks(T: int, chunk_size: int | None, chunk_starts: Sequence[int] | None) -> list[int] | None:
        assert chunk_size is None or chunk_starts is None, "give chunk_size or chunk_starts, not both"
        if chunk_size is not None:
            return chunk_starts_for(T, int(chunk_size))
        if chunk_starts is None:
            return None
        starts = [int(s) for s in chunk_starts]
        assert valid_chunk_starts(starts, T), (
            f"chunk_starts must begin with 0 and increase strictly below the frame count {T}, "
            f"got {starts}")  # fmt: skip
        return starts

    @staticmethod
    def _resolve_offset(
        cache: StreamCache | None, frame_offset: int | None, update_cache: bool, shape: tuple[int, int, int]
    ) -> int:
        if cache is None:
            assert not update_cache, "update_cache=True needs a cache (model.new_stream_cache())"
            assert frame_offset is None or frame_offset >= 0, f"frame_offset must be >= 0, got {frame_offset}"
            return frame_offset or 0
        assert frame_offset is None or frame_offset == cache.num_frames, (
            f"frame_offset {frame_offset} does not match the cache, which holds {cache.num_frames} frames")  # fmt: skip
        assert cache.shape is None or cache.shape == shape, (
            f"(batch, height, width) {shape} does not match the cache's {cache.shape}")  # fmt: skip
        return cache.num_frames

    # ------------------------------------------------------------------------------------
    # Initialisation for training from scratch (the reference's init).
    # ------------------------------------------------------------------------------------

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise every parameter as the reference does before training.

        Linear layers: Xavier-uniform weights, zero biases (the Plücker projection included);
        timestep / text MLPs and t_block: N(0, 0.02); modulation tables: N(0, 1/C); convs:
        PyTorch defaults, except zero t_conv, zero chunk-Plücker and raymap embedders and
        identity key convs. Attention starts as a plain linear attention: beta bias 5, gate
        weights 0, dt_bias -5, A_log 0, output gate 0 weights and bias 1.2785 (SiLU = 1),
        zero camera output projection, camera q/k/v/norm/conv copied from the main branch.
        """
        C = self.config.hidden_size
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.Conv2d, nn.Conv3d)):
                m.reset_parameters()
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for lin in (self.t_embedder.mlp[0], self.t_embedder.mlp[2], self.t_block[1],
                    self.y_embedder.y_proj.fc1, self.y_embedder.y_proj.fc2):  # fmt: skip
            nn.init.normal_(lin.weight, std=0.02)
        self.y_embedder.y_embedding.copy_(torch.randn_like(self.y_embedder.y_embedding) / math.sqrt(
            self.y_embedder.y_embedding.shape[-1]))  # fmt: skip
        self.attention_y_norm.weight.fill_(self.config.text_norm_init)
        for emb in (self.plucker_embedder, self.raymap_embedder):
            nn.init.zeros_(emb.proj.weight)
            nn.init.zeros_(emb.proj.bias)
        self.final_layer.scale_shift_table.copy_(torch.randn(2, C) / math.sqrt(C))
        for block in self.blocks:
            block.scale_shift_table.copy_(torch.randn(6, C) / math.sqrt(C))
            nn.init.zeros_(block.mlp.t_conv.weight)
            self._init_attention(block.attn)

    @staticmethod
    def _init_attention(attn) -> None:
        C = attn.proj.in_features
        nn.init.zeros_(attn.out_proj_cam.weight)
        nn.init.zeros_(attn.out_proj_cam.bias)
        nn.init.zeros_(attn.beta_proj.weight)
        nn.init.constant_(attn.beta_proj.bias, 5.0)
        nn.init.zeros_(attn.gate_proj.weight)
        nn.init.zeros_(attn.gate_proj.bias)
        attn.dt_bias.fill_(-5.0)
        attn.A_log.fill_(0.0)
        attn.recall_gate.zero_()
        nn.init.zeros_(attn.output_gate.weight)
        nn.init.constant_(attn.output_gate.bias, OUTPUT_GATE_INIT_BIAS)
        # The camera branch starts as a copy of the main branch.
        q, k, v = attn.qkv.weight.split(C)
        attn.q_proj_cam.weight.copy_(q)
        attn.k_proj_cam.weight.copy_(k)
        attn.v_proj_cam.weight.copy_(v)
        attn.q_norm_cam.weight.copy_(attn.q_norm.weight)
        attn.k_norm_cam.weight.copy_(attn.k_norm.weight)
        if isinstance(attn, GDNAttention):
            for conv in (attn.conv_k, attn.conv_k_cam):
                _identity_key_conv(conv)


def _identity_key_conv(conv: KeyConv) -> None:
    conv.weight.zero_()
    conv.weight[:, 0, -1] = 1.0


__all__ = ["SanaWMTransformer", "StreamCache"]
