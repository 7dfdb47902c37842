"""Self-attention layers of a block: frame-wise GDN or softmax, each with a camera branch.

Both kinds hold the same parameters (the checkpoint keeps the GDN gates in softmax blocks,
unused there). The layer output is

    proj( (main(x) + out_proj_cam(camera(x))) * SiLU(output_gate(x)) )

main:   q, k, v = qkv(x); [GDN: short conv on k along frames]; RMSNorm q, k over the full
        width; [GDN: ReLU on q, k and k / sqrt(D*S)]; 3D RoPE; GDN recurrence or SDPA.
camera: its own q/k/v projections, [GDN: short conv on k], RMSNorms, [GDN: ReLU and key
        scale]; UCPE transforms (`camera.py`); [GDN: optionally (`camera_rms_clamp`) an RMS
        clamp to the untransformed tensors, then the single-path delta rule with beta reduced
        by the keys' norm inflation | softmax: RMS clamp to the untransformed tensors, SDPA];
        inverse transform.

A call covers frames f0 .. f0+T-1. `GDNPast` / `SoftmaxPast` carry what later chunks need: GDN
forward states and the last raw keys (constant size), or the softmax keys / values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sanawm.chunks import chunk_spans
from sanawm.model.camera import (
    CameraTransforms,
    rms_clamp,
    rms_clamp_from_sums,
    rms_clamp_scale,
    transform_keys,
    transform_outputs,
    transform_queries,
)
from sanawm.model.config import SanaWMConfig
from sanawm.model.layers import RMSNorm, at_least_f32
from sanawm.model.rope import Rotation, apply_rope
from sanawm.ops import ucpe
from sanawm.ops.flash import attention
from sanawm.ops.gdn import GDNState, delta_rule, gdn
from sanawm.ops.temporal import key_conv

if TYPE_CHECKING:
    from sanawm.parallel.sequence import RowShard

# Bias of the output gate for which SiLU(bias) = 1 (training starts as a plain sum).
OUTPUT_GATE_INIT_BIAS = 1.278464542761074


@dataclass
class CallContext:
    """What every layer of one forward call needs besides its tokens."""

    height: int
    width: int
    rope: Rotation
    """(N, D/2) RoPE of this call's tokens."""
    camera: CameraTransforms | None
    """Camera transforms, or None to skip the camera branch."""
    chunk_starts: Sequence[int] | None
    """First frame of each chunk within this call (None: one chunk)."""
    sequence: RowShard | None = None
    """Sequence parallelism (`sanawm.parallel.sequence`): the layers get this rank's rows of
    every frame, and `heads` / `merge` switch to and from this rank's heads of all tokens.
    `height` / `width`, `rope` and `camera` always describe the whole frame."""

    @property
    def tokens_per_frame(self) -> int:
        """Tokens of a whole frame (also under sequence parallelism)."""
        return self.height * self.width

    @property
    def local_height(self) -> int:
        """Latent rows of each frame that the layers' token tensors hold."""
        return self.height if self.sequence is None else self.sequence.rows

    def frame_mean(self, x: Tensor) -> Tensor:
        """(B, T, S, C) -> (B, T, C), the mean over each whole frame's tokens."""
        return x.mean(dim=2) if self.sequence is None else self.sequence.frame_mean(x)


@dataclass
class GDNPast:
    """What a GDN layer carries from committed chunks (size independent of their number)."""

    state: GDNState
    key_context: Tensor
    """(B, P, S, C) last raw keys (before the short conv), P <= kernel - 1."""
    cam_state: GDNState | None
    cam_key_context: Tensor | None


@dataclass
class SoftmaxPast:
    """Keys and values (after RoPE / camera transforms, in the attention dtype) of committed chunks."""

    k: Tensor
    """(B, H, N_past, D)."""
    v: Tensor
    cam_k: Tensor | None
    cam_v: Tensor | None


class KeyConv(nn.Module):
    """Depthwise short conv along frames (weight (C, 1, K), causal taps), bidirectional."""

    def __init__(self, channels: int, kernel: int, device=None):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels, 1, kernel, device=device))

    def forward(self, x: Tensor, chunk_starts: Sequence[int] | None, context: Tensor | None) -> Tensor:
        return key_conv(x, self.weight[:, 0, :], chunk_starts=chunk_starts, context=context)

    def new_context(self, old: Tensor | None, x: Tensor) -> Tensor:
        """The last kernel-1 raw frames once x (B, T, S, C) is committed after `old`."""
        keep = self.weight.shape[-1] - 1
        frames = x if old is None else torch.cat([old, x], dim=1)
        return frames[:, frames.shape[1] - keep :].detach().clone() if keep > 0 else frames[:, :0].detach()


class _AttentionBase(nn.Module):
    """Parameters shared by both layer kinds, plus the common projections and gates."""

    def __init__(self, cfg: SanaWMConfig, device=None):
        super().__init__()
        C, H = cfg.hidden_size, cfg.num_heads
        self.num_heads = H
        self.head_dim = cfg.head_dim
        self.qkv = nn.Linear(C, 3 * C, bias=False, device=device)
        self.q_norm = RMSNorm(C, cfg.attn_norm_eps, device=device)
        self.k_norm = RMSNorm(C, cfg.attn_norm_eps, device=device)
        self.proj = nn.Linear(C, C, device=device)
        self.output_gate = nn.Linear(C, C, device=device)
        # GDN gates: beta per token and head, decay per frame and head.
        self.beta_proj = nn.Linear(C, H, device=device)
        self.gate_proj = nn.Linear(C, H, device=device)
        self.A_log = nn.Parameter(torch.zeros(H, device=device))
        self.dt_bias = nn.Parameter(torch.zeros(H, device=device))
        # Unused by the model; kept so the checkpoint format round-trips.
        self.register_buffer("recall_gate", torch.zeros(1, device=device))
        # Camera branch.
        self.q_proj_cam = nn.Linear(C, C, device=device)
        self.k_proj_cam = nn.Linear(C, C, device=device)
        self.v_proj_cam = nn.Linear(C, C, device=device)
        self.out_proj_cam = nn.Linear(C, C, device=device)
        self.q_norm_cam = RMSNorm(C, cfg.attn_norm_eps, device=device)
        self.k_norm_cam = RMSNorm(C, cfg.attn_norm_eps, device=device)

    def heads(self, ctx: CallContext, *xs: Tensor) -> list[Tensor]:
        """(B, T, S, H * D_x) -> (B, H, T * S, D_x) each. Under sequence parallelism one
        all-to-all gives this rank's heads of all tokens instead (mixing is per head)."""
        if ctx.sequence is not None:
            return ctx.sequence.to_heads(xs, self.num_heads)
        heads = [x.flatten(1, 2).unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for x in xs]
        # On the CPU every later op (RoPE, the GDN matmuls, the camera transforms) runs
        # markedly faster on contiguous heads than on this transposed view; one copy each pays.
        return [h.contiguous() for h in heads] if xs[0].is_cpu else heads

    def merge(self, ctx: CallContext, frames: int, *xs: Tensor) -> list[Tensor]:
        """(B, H, T * S, D) -> (B, T, S, H * D) each (the inverse of `heads`)."""
        if ctx.sequence is not None:
            return ctx.sequence.to_tokens(xs, frames)
        return [x.transpose(1, 2).flatten(2).unflatten(1, (frames, -1)) for x in xs]

    def merge_branches(self, ctx: CallContext, frames: int, main: Tensor, cam: Tensor | None):
        """`merge` of the main and the camera branch (None when skipped) together."""
        if cam is None:
            return self.merge(ctx, frames, main)[0], None
        main, cam = self.merge(ctx, frames, main, cam)
        return main, cam

    def gates(self, x: Tensor, ctx: CallContext) -> tuple[Tensor, Tensor]:
        """beta (B, T, S, H) in x's dtype (token layout, like x) and decay gamma (B, H, T) in
        float32 (or float64) from each frame's mean token (this rank's heads under sequence
        parallelism)."""
        beta = torch.sigmoid(self.beta_proj(x))
        a = at_least_f32(self.gate_proj(ctx.frame_mean(x)))
        gamma = torch.exp(-at_least_f32(self.A_log).exp() * F.softplus(a + at_least_f32(self.dt_bias)))
        gamma = gamma.transpose(1, 2)
        return beta, gamma if ctx.sequence is None else ctx.sequence.local_heads(gamma)

    def camera_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # Measured on an H200: the main q / k / v and the output gate in the same matmul as
        # these three (weights concatenated per call) made the 961-frame forward ~20 ms slower.
        w = torch.cat([self.q_proj_cam.weight, self.k_proj_cam.weight, self.v_proj_cam.weight])
        b = torch.cat([self.q_proj_cam.bias, self.k_proj_cam.bias, self.v_proj_cam.bias])
        return F.linear(x, w, b).chunk(3, dim=-1)

    @staticmethod
    def camera_transform(q: Tensor, k: Tensor, v: Tensor, cam: CameraTransforms) -> tuple[Tensor, Tensor, Tensor]:
        return transform_queries(q, cam), transform_keys(k, cam), transform_keys(v, cam)

    @staticmethod
    def camera_transform_with_sums(
        q: Tensor, k: Tensor, v: Tensor, cam: CameraTransforms
    ) -> tuple[list[Tensor], list[tuple[Tensor, Tensor]]]:
        """`camera_transform` through `sanawm.ops.ucpe` (one pass per tensor), with each
        tensor's sums of squares over D before and after: [qt, kt, vt], [(ss_q, ss_qt), ...].
        Where `ucpe.kernel_applies` (16-bit CUDA inference): a 961-frame forward on an H200 is
        ~70 ms faster than with inductor's kernels for `camera_transform` and the norms."""
        cos, sin = cam.rope_f32
        outs, sums = [], []
        for x, m in ((q, cam.p.transpose(-1, -2)), (k, cam.p_inv), (v, cam.p_inv)):
            out, ss_in, ss_out = ucpe.ucpe_transform_op(x, m, cos, sin, False)
            outs.append(out)
            sums.append((ss_in, ss_out))
        return outs, sums

    def camera_output(self, out: Tensor, cam: CameraTransforms) -> Tensor:
        """Attention output (B, H, N, D) of the camera branch back to the token frame."""
        if ucpe.kernel_applies(out):
            return ucpe.ucpe_transform_op(out, cam.p, *cam.rope_f32, True)[0]
        return transform_outputs(out, cam)

    def finish(self, x: Tensor, main: Tensor, cam: Tensor | None) -> Tensor:
        combined = main if cam is None else main + self.out_proj_cam(cam)
        combined = combined * F.silu(at_least_f32(self.output_gate(x)))
        return self.proj(combined.to(self.proj.weight.dtype))


class GDNAttention(_AttentionBase):
    """Frame-wise gated DeltaNet attention with the camera delta-rule branch."""

    def __init__(self, cfg: SanaWMConfig, device=None):
        super().__init__(cfg, device=device)
        self.eps = cfg.gdn_eps
        self.backend = cfg.gdn_backend
        self.precision = cfg.gdn_precision
        self.camera_rms_clamp = cfg.camera_rms_clamp
        self.conv_k = KeyConv(cfg.hidden_size, cfg.key_conv_kernel, device=device)
        self.conv_k_cam = KeyConv(cfg.hidden_size, cfg.key_conv_kernel, device=device)

    def _kernel_qk(self, q: Tensor, k: Tensor, tokens_per_frame: int) -> tuple[Tensor, Tensor]:
        """ReLU feature map, keys scaled by 1/sqrt(D * S) (heads layout)."""
        return F.relu(q), F.relu(k) * (self.head_dim**-0.5 * tokens_per_frame**-0.5)

    def forward(
        self, x: Tensor, ctx: CallContext, past: GDNPast | None = None, commit: bool = False
    ) -> tuple[Tensor, GDNPast | None]:
        B, T = x.shape[:2]
        S = ctx.tokens_per_frame
        beta, gamma = self.gates(x, ctx)

        q, k_raw, v = self.qkv(x).chunk(3, dim=-1)
        k = self.conv_k(k_raw, ctx.chunk_starts, past.key_context if past else None)
        q, k, v, beta = self.heads(ctx, self.q_norm(q), self.k_norm(k), v, beta)
        frames = (B, q.shape[1], T, S, self.head_dim)  # q.shape[1]: this rank's heads
        beta = beta.reshape(frames[:-1])
        q, k = self._kernel_qk(q, k, S)
        q_rot, k_rot = apply_rope(q, ctx.rope), apply_rope(k, ctx.rope)
        out, state = gdn(
            *(t.reshape(frames) for t in (q, k, v, q_rot, k_rot)),
            beta, gamma, eps=self.eps, chunk_starts=ctx.chunk_starts,
            initial_state=past.state if past else None, backend=self.backend, precision=self.precision,
        )  # fmt: skip
        out = out.reshape(B, -1, T * S, self.head_dim)

        cam = cam_state = cam_k_raw = None
        if ctx.camera is not None:
            cam, cam_state, cam_k_raw = self._camera(x, ctx, beta, gamma, past)
        main, cam = self.merge_branches(ctx, T, out, cam)

        new_past = None
        if commit:
            new_past = GDNPast(
                state=_detach_state(state),
                key_context=self.conv_k.new_context(past.key_context if past else None, k_raw),
                cam_state=None if cam_state is None else _detach_state(cam_state),
                cam_key_context=None
                if cam_k_raw is None
                else self.conv_k_cam.new_context(past.cam_key_context if past else None, cam_k_raw),
            )
        return self.finish(x, main, cam), new_past

    def _camera(
        self, x: Tensor, ctx: CallContext, beta: Tensor, gamma: Tensor, past: GDNPast | None
    ) -> tuple[Tensor, GDNState, Tensor]:
        """The camera branch's output in the heads layout (B, H, N, D), its state, raw keys."""
        B, T = x.shape[:2]
        S = ctx.tokens_per_frame
        q, k_raw, v = self.camera_qkv(x)
        k = self.conv_k_cam(k_raw, ctx.chunk_starts, past.cam_key_context if past else None)
        q, k, v = self.heads(ctx, self.q_norm_cam(q), self.k_norm_cam(k), v)
        frames = (B, q.shape[1], T, S, self.head_dim)
        q, k = self._kernel_qk(q, k, S)
        if ucpe.kernel_applies(q):
            (qt, kt, vt), sums = self.camera_transform_with_sums(q, k, v, ctx.camera)
            ss_k, ss_kt = sums[1]
            if self.camera_rms_clamp:
                qt, kt, vt = (rms_clamp_from_sums(t, ss_t, ss) for t, (ss, ss_t) in zip((qt, kt, vt), sums))
                ss_kt = ss_kt * rms_clamp_scale(ss_kt, ss_k, k.shape[-1]) ** 2  # the clamped keys' norms
            norm_k, norm_t = ss_k.sqrt().clamp_min(1e-6), ss_kt.sqrt().clamp_min(1e-6)
        else:
            qt, kt, vt = self.camera_transform(q, k, v, ctx.camera)
            if self.camera_rms_clamp:  # the diffusers / sglang variant (SanaWMConfig.camera_rms_clamp)
                qt, kt, vt = rms_clamp(qt, q), rms_clamp(kt, k), rms_clamp(vt, v)
            work = torch.promote_types(k.dtype, torch.float32)
            norm_t = torch.linalg.vector_norm(kt, dim=-1, dtype=work).clamp_min(1e-6)
            norm_k = torch.linalg.vector_norm(k, dim=-1, dtype=work).clamp_min(1e-6)
        # The transforms can inflate the keys; lower beta by the frame's mean squared inflation
        # so the delta rule stays stable.
        inflation = (norm_t / norm_k) ** 2
        inflation = inflation.reshape(frames[:-1]).mean(dim=-1)
        beta_cam = beta / inflation.clamp_min(1.0)[..., None]
        out, state = delta_rule(
            *(t.reshape(frames) for t in (qt, kt, vt)),
            beta_cam, gamma, chunk_starts=ctx.chunk_starts,
            initial_state=past.cam_state if past else None, backend=self.backend, precision=self.precision,
        )  # fmt: skip
        out = self.camera_output(out.reshape(B, -1, T * S, self.head_dim), ctx.camera)
        return out, state, k_raw


def _chunk_causal_sdpa(
    q: Tensor, k: Tensor, v: Tensor, *, tokens_per_frame: int, chunk_starts: Sequence[int] | None,
    past_tokens: int, scale: float | None, kernel: str = "sdpa",
) -> Tensor:  # fmt: skip
    """Attention where the queries of chunk c see all past keys and the keys of chunks <= c.

    One unmasked attention call per chunk (no N x N mask is ever built)."""
    T = q.shape[2] // tokens_per_frame
    bounds = chunk_spans(chunk_starts, T)
    if len(bounds) == 1:
        return attention(q, k, v, scale, kernel)
    outs = []
    for start, end in bounds:
        rows = slice(start * tokens_per_frame, end * tokens_per_frame)
        visible = past_tokens + end * tokens_per_frame
        outs.append(attention(q[:, :, rows], k[:, :, :visible], v[:, :, :visible], scale, kernel))
    return torch.cat(outs, dim=2)


def padded_head_scale(head_dim: int) -> float:
    """Softmax scale of the camera branch: the reference zero-pads heads to a FlashAttention
    width (32/64/128/256) before SDPA, so the default scale uses the padded width."""
    if head_dim in (32, 64, 128, 256) or head_dim >= 256:
        return head_dim**-0.5
    return (128 if head_dim <= 128 else 256) ** -0.5


class SoftmaxAttention(_AttentionBase):
    """Full (or chunk-causal) softmax attention with RoPE, and the camera SDPA branch."""

    def __init__(self, cfg: SanaWMConfig, device=None):
        super().__init__(cfg, device=device)
        self.attn_dtype = None if cfg.softmax_attn_dtype is None else getattr(torch, cfg.softmax_attn_dtype)
        self.cam_scale = padded_head_scale(cfg.head_dim)
        # Which kernel runs the two attentions (one of `sanawm.ops.flash.ATTENTION_KERNELS`).
        self.attention_kernel = "sdpa"

    def _attn_cast(self, *ts: Tensor) -> list[Tensor]:
        if self.attn_dtype is None or ts[0].dtype != torch.float32:
            return list(ts)
        return [t.to(self.attn_dtype) for t in ts]

    def forward(
        self, x: Tensor, ctx: CallContext, past: SoftmaxPast | None = None, commit: bool = False
    ) -> tuple[Tensor, SoftmaxPast | None]:
        T, S = x.shape[1], ctx.tokens_per_frame
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = self.heads(ctx, self.q_norm(q), self.k_norm(k), v)
        q, k = apply_rope(q, ctx.rope), apply_rope(k, ctx.rope)
        q, k, v = self._attn_cast(q, k, v)
        keys = k if past is None else torch.cat([past.k, k], dim=2)
        values = v if past is None else torch.cat([past.v, v], dim=2)
        past_tokens = 0 if past is None else past.k.shape[2]
        out = _chunk_causal_sdpa(
            q, keys, values, tokens_per_frame=S, chunk_starts=ctx.chunk_starts, past_tokens=past_tokens, scale=None,
            kernel=self.attention_kernel,
        )  # fmt: skip
        main = out.to(x.dtype)

        cam = cam_keys = cam_values = None
        if ctx.camera is not None:
            qc, kc, vc = self.camera_qkv(x)
            qc, kc, vc = self.heads(ctx, self.q_norm_cam(qc), self.k_norm_cam(kc), vc)
            # Softmax blocks always clamp the transformed tensors to their pre-transform RMS
            # (GDN blocks lower beta, and clamp only with `camera_rms_clamp`).
            if ucpe.kernel_applies(qc):
                transformed, sums = self.camera_transform_with_sums(qc, kc, vc, ctx.camera)
                clamped = [rms_clamp_from_sums(t, ss_t, ss) for t, (ss, ss_t) in zip(transformed, sums)]
            else:
                qt, kt, vt = self.camera_transform(qc, kc, vc, ctx.camera)
                clamped = [rms_clamp(qt, qc), rms_clamp(kt, kc), rms_clamp(vt, vc)]
            qc, kc, vc = self._attn_cast(*clamped)
            cam_keys = kc if past is None or past.cam_k is None else torch.cat([past.cam_k, kc], dim=2)
            cam_values = vc if past is None or past.cam_v is None else torch.cat([past.cam_v, vc], dim=2)
            out = _chunk_causal_sdpa(
                qc, cam_keys, cam_values, tokens_per_frame=S, chunk_starts=ctx.chunk_starts,
                past_tokens=cam_keys.shape[2] - qc.shape[2], scale=self.cam_scale, kernel=self.attention_kernel,
            )  # fmt: skip
            cam = self.camera_output(out.to(x.dtype), ctx.camera)
        main, cam = self.merge_branches(ctx, T, main, cam)

        new_past = None
        if commit:
            new_past = SoftmaxPast(keys.detach(), values.detach(), _detach(cam_keys), _detach(cam_values))
        return self.finish(x, main, cam), new_past


def _detach(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach()


def _detach_state(state: GDNState) -> GDNState:
    return GDNState(state.kv.detach(), _detach(state.z))


__all__ = [
    "CallContext",
    "GDNPast",
    "SoftmaxPast",
    "KeyConv",
    "GDNAttention",
    "SoftmaxAttention",
    "padded_head_scale",
    "OUTPUT_GATE_INIT_BIAS",
]
