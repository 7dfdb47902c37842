"""The Triton kernels of the frame-wise Gated DeltaNet: `gdn` and `delta_rule` of `sanawm.ops.gdn`.

Same functions, same arguments, same results (to fp32 rounding) as the PyTorch path; it reads
bf16 / fp16 / fp32 inputs in their own layout (any strides with a unit last stride), keeps
states and sums in fp32 and returns the inputs' dtype. No autograd. Five launches for `gdn`,
four for `delta_rule`:

1. transitions, one program per (frame, batch*head, block of output columns) and product:
   the affine map of frame t, kv_t = kv_{t-1} W_t + U_t and z_t^T = z_{t-1}^T W^z_t + u^z_t, with
   W_t = gamma (I - K~^T diag(beta) K~), U_t = (beta V)^T K~, W^z_t = gamma (I - K^T diag(beta) K)
   and u^z_t = sum_s beta_s k_s. These D x S by S x D products are most of the work and have
   no sequential dependency. W^z is symmetric, so z^T W^z = (W^z z)^T.
2. scan, one program per (batch*head, block of 16 state rows): the only sequential part. The
   state is stacked as rows, kv's D value rows then z as one more row, so every row obeys
   row_t = row_{t-1} W + u and blocks of rows scan independently (8 programs per head).
   Forward over all frames (seeded with the initial state; the last state is the final
   state), then backward within each chunk, added onto the forward history shifted by one
   frame, so each frame's read-out needs one summed state.
3. read-out, one program per (token block, frame, batch*head):
   out = q_rot kv^T / (q . z + eps), or q_rot kv^T without the normaliser.

The head width D is padded to P = max(16, next power of two) inside the kernels (112 -> 128);
padded rows and columns of the inputs are masked to zero.

Precision (`precision=`):
- "ieee" (default): every product is computed as in IEEE fp32 arithmetic, on the bf16 tensor
  cores. An fp32 operand is split exactly into three bf16 pieces (hi + mid + lo carry all 24
  bits of its significand); a bf16 input is its own single piece (beta * x of two bf16 numbers
  takes two); the piece products are exact and summed in fp32. For two split operands the
  three smallest cross products (below 2^-24 of the product) are left out. Matrices reused by
  later kernels (W, the summed states) are stored as their pieces. Tensor cores truncate when
  they add into a large running sum, so every token block starts a fresh accumulator and
  blocks are added in (rounded) fp32. Measured on an H100 against float64: relative L2 error
  <= 2.6e-7 (output) and <= 4.4e-7 (final state) for fp32 and bf16 inputs, like the PyTorch
  fp32 path (~2.4e-7); bf16 outputs carry exactly the bf16 rounding of the exact result.
- "tf32": states and transitions stored in fp32, products with a state in tf32 (operands
  lose 13 significand bits); transition products of bf16 inputs from their exact bf16 pieces
  (`Tuning.tf32_transition_pieces`). Relative error ~1e-3 to 2e-3; faster at the 2.6B shapes
  (H200, one `gdn` call: 4.86 ms "ieee", 3.98 ms "tf32").
- "auto" (the default): "tf32" for bf16 / fp16 inputs, "ieee" for fp32. A bf16 output is
  rounded to 8 significand bits anyway: on 880-token frames of 112-wide heads (H200,
  benchmarks/logs/check_gdn_gpu_sweep_h200.log) tf32, measured with tf32 transition products
  (before `Tuning.tf32_transition_pieces`, whose exact products drop tf32's rounding there), puts the bf16
  output 1.8e-3 (gdn) and 2.0e-3 (delta_rule) from float64, where the rounding alone is 1.65e-3;
  the 2.6B model's bf16 velocity stays 1.27e-2 from float32 with either product and with "ieee",
  and the 961-frame forward was 18 ms faster than "ieee" before the pieces (H200,
  scripts/check_gdn_precision.py, benchmarks/logs/check_gdn_precision_h200_pieces.log and
  benchmarks/README.md). The reference port's own
  fused kernels multiply in bf16 by default (benchmarks/PARITY.md), coarser than either.
benchmarks/logs/check_gdn_gpu_h100.log holds the accuracy table and timings.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from sanawm.chunks import chunk_spans
from sanawm.ops.gdn.common import GDNState, check_shapes, check_state

PRECISIONS = ("ieee", "tf32")
AUTO_PRECISION = "auto"
"""Precision by input dtype (`precision_for`): tf32 for bf16 / fp16 inputs, ieee for fp32."""
MAX_HEAD_DIM = 128
"""Widest head the kernels take: one D x D fp32 accumulator per program must fit in registers."""
INPUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)

# Kernels are built as interpreted functions when TRITON_INTERPRET=1 is set at import time;
# then (and only then) they also run on CPU tensors.
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


@dataclass(frozen=True)
class Tuning:
    """Launch shapes (block sizes, warps, pipeline depth) of the three kernels."""

    transition_block_s: int = 64
    """Tokens per step of the transition products."""
    transition_block_n: int = 64
    """Output columns per transition program (P / block_n programs per frame and product)."""
    transition_warps: int = 4
    transition_stages: int = 2
    scan_block_rows: int = 16
    """State rows per scan program (>= 16 for the tensor cores)."""
    scan_warps: int = 4
    scan_stages: int = 2
    readout_block_s: int = 64
    readout_warps: int = 4
    readout_stages: int = 2
    tf32_transition_pieces: int = 3
    """Precision "tf32" only: a transition product whose factors are bf16 inputs, the weighted
    one exact in at most this many bf16 pieces (2 with a bf16 beta, 3 with an fp32 beta), is
    computed from those pieces on the bf16 tensor cores instead of in tf32 (0: never); the
    transitions are still stored in fp32 for the tf32 scan. The pieces' products are exact, so
    this is both more accurate and faster than tf32 products: on an H200 at the 2.6B shapes
    (880-token frames, 121 frames, 20 heads of 112) one `gdn` call took 4.75 ms with tf32
    products and 3.98 ms from pieces, one `delta_rule` call (fp32 beta) 3.58 and 3.40 ms
    (benchmarks/logs/check_gdn_gpu_sweep_h200_pieces.log)."""


DEFAULT_TUNING = Tuning()


# ----------------------------------------------------------------------------------------
# Kernel helpers
# ----------------------------------------------------------------------------------------


@triton.jit
def _split3(x):
    """Three bf16 tensors whose fp32 sum is exactly x (each takes the next 8 bits)."""
    hi = x.to(tl.bfloat16)
    rest = x - hi.to(tl.float32)
    mid = rest.to(tl.bfloat16)
    lo = (rest - mid.to(tl.float32)).to(tl.bfloat16)
    return hi, mid, lo


@triton.jit
def _piece_dot(a, b, acc, INTERPRET: tl.constexpr):
    """acc + a @ b for bf16 pieces (exact products, fp32 sums)."""
    if INTERPRET:
        # The CPU interpreter mishandles bf16 dots; fp32 products of 8-bit pieces are exact too.
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc)


@triton.jit
def _mma_pieces(acc, a, b0, b1, b2, A_PIECES: tl.constexpr, B_PIECES: tl.constexpr, INTERPRET: tl.constexpr):
    """acc + a @ b for an fp32 tile a (exactly A_PIECES bf16 pieces) and b = b0 + b1 + b2.

    Smallest products first; pairs of pieces whose product is below 2^-24 of a @ b are skipped.
    """
    a0, a1, a2 = _split3(a)
    if A_PIECES > 2:
        acc = _piece_dot(a2, b0, acc, INTERPRET)
    if B_PIECES > 2:
        acc = _piece_dot(a0, b2, acc, INTERPRET)
    if A_PIECES > 1 and B_PIECES > 1:
        acc = _piece_dot(a1, b1, acc, INTERPRET)
    if A_PIECES > 1:
        acc = _piece_dot(a1, b0, acc, INTERPRET)
    if B_PIECES > 1:
        acc = _piece_dot(a0, b1, acc, INTERPRET)
    return _piece_dot(a0, b0, acc, INTERPRET)


@triton.jit
def _mma(acc, a, b, A_PIECES: tl.constexpr, B_PIECES: tl.constexpr, TF32: tl.constexpr, INTERPRET: tl.constexpr):
    """acc + a @ b for fp32 tiles; A_PIECES / B_PIECES (1..3) bf16 pieces represent a / b exactly."""
    if TF32:
        acc = tl.dot(a, b, acc, input_precision="tf32")
    else:
        b0, b1, b2 = _split3(b)
        acc = _mma_pieces(acc, a, b0, b1, b2, A_PIECES, B_PIECES, INTERPRET)
    return acc


@triton.jit
def _store_split(ptr, x, PLANE: tl.constexpr, TF32: tl.constexpr):
    """Store an fp32 tile as kept for later tensor-core use: fp32 for tf32, else 3 bf16 planes."""
    if TF32:
        tl.store(ptr, x)
    else:
        hi, mid, lo = _split3(x)
        tl.store(ptr, hi)
        tl.store(ptr + PLANE, mid)
        tl.store(ptr + 2 * PLANE, lo)


@triton.jit
def _mma_stored(acc, a, ptr, PLANE: tl.constexpr, A_PIECES: tl.constexpr, TF32: tl.constexpr,
                INTERPRET: tl.constexpr):  # fmt: skip
    """acc + a @ b with b read from pointers `ptr` as written by `_store_split`."""
    if TF32:
        acc = tl.dot(a, tl.load(ptr), acc, input_precision="tf32")
    else:
        b0 = tl.load(ptr)
        b1 = tl.load(ptr + PLANE)
        b2 = tl.load(ptr + 2 * PLANE)
        acc = _mma_pieces(acc, a, b0, b1, b2, A_PIECES, 3, INTERPRET)
    return acc


# ----------------------------------------------------------------------------------------
# 1. Per-frame transitions
# ----------------------------------------------------------------------------------------


@triton.jit
def _transition_kernel(
    a_ptr, a_sb, a_sh, a_st, a_ss,  # (B, H, T, S, D) left factor, weighted by beta
    b_ptr, b_sb, b_sh, b_st, b_ss,  # (B, H, T, S, D) right factor
    beta_ptr, beta_sb, beta_sh, beta_st, beta_ss,  # (B, H, T, S)
    gamma_ptr,  # (B*H, T) fp32
    w_ptr,  # (B*H, T, G, NPIECE, P, P): W of slot GROUP written when DECAY
    u_ptr,  # (B*H, T, R, P) fp32: rows ROW0.. written otherwise
    H, T, S, D,
    GROUP: tl.constexpr,  # which W slot (0: kv, 1: z)
    G: tl.constexpr,
    R: tl.constexpr,
    ROW0: tl.constexpr,  # first U row written
    DECAY: tl.constexpr,  # True: W = gamma (I - acc); False: U rows = acc
    ROW_SUM: tl.constexpr,  # also write u^z = sum_s beta_s b_s as U row ROW0 (W^z: a and b are both k)
    Z_ROWS: tl.constexpr,  # rows of the z block (u^z and zero padding)
    A_PIECES: tl.constexpr,
    B_PIECES: tl.constexpr,
    TF32: tl.constexpr,  # how W is stored: one fp32 plane (tf32) or three bf16 planes
    TF32_MMA: tl.constexpr,  # how the product is computed: tf32, or from A_PIECES x B_PIECES bf16 pieces
    INTERPRET: tl.constexpr,
    P: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_N: tl.constexpr,  # output columns per program
):  # fmt: skip
    """acc[:, cols] = (beta * a)^T b[:, cols] over the S tokens of one frame and one head."""
    t = tl.program_id(0)
    bh = tl.program_id(1)
    nb = tl.program_id(2)
    b_idx = bh // H
    h_idx = bh % H
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, P)
    offs_n = nb * BLOCK_N + tl.arange(0, BLOCK_N)
    a_base = a_ptr + b_idx * a_sb + h_idx * a_sh + t * a_st
    b_base = b_ptr + b_idx * b_sb + h_idx * b_sh + t * b_st
    beta_base = beta_ptr + b_idx * beta_sb + h_idx * beta_sh + t * beta_st

    acc = tl.zeros((P, BLOCK_N), dtype=tl.float32)
    row_sum = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for s0 in range(0, S, BLOCK_S):
        s = s0 + offs_s
        mask_s = s < S
        a = tl.load(a_base + s[:, None] * a_ss + offs_d[None, :], mask=mask_s[:, None] & (offs_d < D)[None, :],
                    other=0.0).to(tl.float32)  # fmt: skip
        b = tl.load(b_base + s[:, None] * b_ss + offs_n[None, :], mask=mask_s[:, None] & (offs_n < D)[None, :],
                    other=0.0).to(tl.float32)  # fmt: skip
        beta = tl.load(beta_base + s * beta_ss, mask=mask_s, other=0.0).to(tl.float32)
        # A fresh accumulator per block: the tensor cores truncate when they add into a large
        # running sum (a bias that grows with S); the fp32 add across blocks rounds.
        zero = tl.zeros((P, BLOCK_N), dtype=tl.float32)
        acc += _mma(zero, tl.trans(a * beta[:, None]), b, A_PIECES, B_PIECES, TF32_MMA, INTERPRET)
        if ROW_SUM:
            row_sum += tl.sum(b * beta[:, None], axis=0)

    rows = offs_d[:, None]
    cols = offs_n[None, :]
    if DECAY:
        gamma = tl.load(gamma_ptr + bh * T + t)
        eye = tl.where((rows == cols) & (rows < D), 1.0, 0.0)
        plane: tl.constexpr = P * P
        w_tile = w_ptr + ((bh * T + t) * G + GROUP) * (3 - 2 * TF32) * plane + rows * P + cols
        _store_split(w_tile, gamma * (eye - acc), plane, TF32)
    else:
        tl.store(u_ptr + (bh * T + t) * R * P + (ROW0 + rows) * P + cols, acc)
    if ROW_SUM:
        # The z row block: u^z on its first row, zeros on the padding rows below it.
        pad_rows = tl.arange(0, Z_ROWS)[:, None]
        tile = tl.where(pad_rows == 0, row_sum[None, :], 0.0)
        tl.store(u_ptr + (bh * T + t) * R * P + (ROW0 + pad_rows) * P + cols, tile)


# ----------------------------------------------------------------------------------------
# 2. Sequential scan over frames (rows of the stacked state in parallel)
# ----------------------------------------------------------------------------------------


@triton.jit
def _scan_kernel(
    w_ptr,  # (B*H, T, G, NPIECE, P, P) as stored by _store_split
    u_ptr,  # (B*H, T, R, P) fp32
    hist_ptr,  # (B*H, T, R, P) fp32 scratch: the forward state after each frame
    read_ptr,  # (B*H, T, NPIECE, R, P) out: forward + backward-within-chunk state per frame
    init_ptr,  # (B*H, R, P) forward seed (read when HAS_INIT)
    final_ptr,  # (B*H, R, P) out: forward state after the last frame
    keep_ptr,  # (T,) fp32: 0 where a chunk starts (the backward state restarts there), else 1
    T,
    KV_BLOCKS,  # row blocks of kv (then one block for z when G == 2)
    G: tl.constexpr,
    R: tl.constexpr,
    P: tl.constexpr,
    BLOCK_R: tl.constexpr,
    HAS_INIT: tl.constexpr,
    TF32: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    bh = tl.program_id(0)
    rb = tl.program_id(1)
    is_z = rb >= KV_BLOCKS
    row0 = tl.where(is_z, P, rb * BLOCK_R)
    group = is_z.to(tl.int32)
    NPIECE: tl.constexpr = 3 - 2 * TF32
    rows = row0 + tl.arange(0, BLOCK_R)[:, None]
    cols = tl.arange(0, P)[None, :]
    w_tile = w_ptr + (bh * T * G + group) * NPIECE * P * P + tl.arange(0, P)[:, None] * P + cols
    w_step: tl.constexpr = G * NPIECE * P * P
    rows_offs = rows * P + cols
    u_tile = u_ptr + bh * T * R * P + rows_offs
    h_tile = hist_ptr + bh * T * R * P + rows_offs
    r_tile = read_ptr + bh * T * NPIECE * R * P + rows_offs
    zero = tl.zeros((BLOCK_R, P), dtype=tl.float32)

    if HAS_INIT:
        state = tl.load(init_ptr + bh * R * P + rows_offs)
    else:
        state = zero
    for t in range(0, T):
        u = tl.load(u_tile + t * R * P)
        state = _mma_stored(zero, state, w_tile + t * w_step, P * P, 3, TF32, INTERPRET) + u
        tl.store(h_tile + t * R * P, state)
    tl.store(final_ptr + bh * R * P + rows_offs, state)

    # The backward pass re-reads the history written above by other threads of this program.
    tl.debug_barrier()
    state = zero
    for i in range(0, T):
        t = T - 1 - i
        h = tl.load(h_tile + t * R * P)
        _store_split(r_tile + t * NPIECE * R * P, h + state, R * P, TF32)
        u = tl.load(u_tile + t * R * P)
        keep = tl.load(keep_ptr + t)
        state = (_mma_stored(zero, state, w_tile + t * w_step, P * P, 3, TF32, INTERPRET) + u) * keep


# ----------------------------------------------------------------------------------------
# 3. Read-out
# ----------------------------------------------------------------------------------------


@triton.jit
def _readout_kernel(
    qr_ptr, qr_sb, qr_sh, qr_st, qr_ss,  # (B, H, T, S, D) rotated queries
    q_ptr, q_sb, q_sh, q_st, q_ss,  # (B, H, T, S, D) queries of the normaliser
    out_ptr, o_sb, o_sh, o_st, o_ss,  # (B, H, T, S, D)
    read_ptr,  # (B*H, T, NPIECE, R, P) summed states as stored by _store_split
    H, T, S, D,
    eps,
    NORMALIZER: tl.constexpr,
    Q_PIECES: tl.constexpr,
    TF32: tl.constexpr,
    INTERPRET: tl.constexpr,
    R: tl.constexpr,
    P: tl.constexpr,
    BLOCK_S: tl.constexpr,
):  # fmt: skip
    sb = tl.program_id(0)
    t = tl.program_id(1)
    bh = tl.program_id(2)
    b_idx = bh // H
    h_idx = bh % H
    NPIECE: tl.constexpr = 3 - 2 * TF32
    s = sb * BLOCK_S + tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, P)
    mask_d = offs_d < D
    mask = (s < S)[:, None] & mask_d[None, :]
    r_base = read_ptr + (bh * T + t) * NPIECE * R * P

    q_rot = tl.load(qr_ptr + b_idx * qr_sb + h_idx * qr_sh + t * qr_st + s[:, None] * qr_ss + offs_d[None, :],
                    mask=mask, other=0.0).to(tl.float32)  # fmt: skip
    # kv^T[j, i] = kv[i, j]. Rows i >= D of the state may be unwritten padding: they only reach
    # the columns i >= D of num, which are never stored.
    kv_t = r_base + offs_d[None, :] * P + offs_d[:, None]
    num = _mma_stored(tl.zeros((BLOCK_S, P), dtype=tl.float32), q_rot, kv_t, R * P, Q_PIECES, TF32, INTERPRET)
    if NORMALIZER:
        z = tl.load(r_base + P * P + offs_d).to(tl.float32)
        if not TF32:
            z += tl.load(r_base + R * P + P * P + offs_d).to(tl.float32)
            z += tl.load(r_base + 2 * R * P + P * P + offs_d).to(tl.float32)
        q = tl.load(q_ptr + b_idx * q_sb + h_idx * q_sh + t * q_st + s[:, None] * q_ss + offs_d[None, :],
                    mask=mask, other=0.0).to(tl.float32)  # fmt: skip
        den = tl.sum(q * z[None, :], axis=1)
        num = num / (den[:, None] + eps)
    out = out_ptr + b_idx * o_sb + h_idx * o_sh + t * o_st + s[:, None] * o_ss + offs_d[None, :]
    tl.store(out, num.to(out_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------


def padded_width(head_dim: int) -> int:
    """P: the head width inside the kernels (a power of two, at least 16 for the tensor cores)."""
    return max(16, triton.next_power_of_2(head_dim))


def unsupported_reason(q: Tensor, beta: Tensor, gamma: Tensor, tensors: Sequence[Tensor]) -> str | None:
    """Why these inputs cannot take the fused path, or None if they can."""
    if q.dtype not in INPUT_DTYPES:
        return f"dtype {q.dtype} is not one of {INPUT_DTYPES}"
    if any(t.dtype != q.dtype for t in tensors):
        return "q, k, v, q_rot and k_rot must share one dtype"
    if beta.dtype not in INPUT_DTYPES or gamma.dtype not in INPUT_DTYPES:
        return f"beta / gamma must be one of {INPUT_DTYPES}"
    if q.shape[-1] > MAX_HEAD_DIM:
        return f"head dim {q.shape[-1]} exceeds {MAX_HEAD_DIM}"
    if torch.is_grad_enabled() and any(t.requires_grad for t in (*tensors, beta, gamma)):
        return "the fused path has no backward; gradients need the torch path"
    if not (q.is_cuda or (_INTERPRETED and q.device.type == "cpu")):
        return f"tensors are on {q.device}; the Triton kernels need CUDA (or TRITON_INTERPRET=1 on CPU)"
    return None


def _strides5(x: Tensor) -> tuple[Tensor, tuple[int, int, int, int]]:
    if x.stride(-1) != 1:
        x = x.contiguous()
    return x, tuple(x.stride()[:4])


def _pack_state(state: GDNState, B: int, H: int, D: int, P: int, R: int, normalizer: bool, device) -> Tensor:
    """GDNState -> (B*H, R, P) fp32 rows: kv's value rows, then z on row P."""
    check_state(state, B, H, D, normalizer)
    rows = torch.zeros(B * H, R, P, device=device, dtype=torch.float32)
    rows[:, :D, :D] = state.kv.reshape(B * H, D, D)
    if normalizer:
        rows[:, P, :D] = state.z.reshape(B * H, D)
    return rows


def precision_for(dtype: torch.dtype) -> str:
    """The "auto" precision for inputs of `dtype`."""
    return "tf32" if dtype in (torch.bfloat16, torch.float16) else "ieee"


# Launched eagerly under torch.compile (`sanawm.model.compile`): the host-side launch logic is
# plain Python over shapes, and the kernels gain nothing from being traced.
@torch.compiler.disable
def _fused(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_rot: Tensor,
    k_rot: Tensor,
    beta: Tensor,
    gamma: Tensor,
    *,
    eps: float | None,
    chunk_starts: Sequence[int] | None,
    initial_state: GDNState | None,
    precision: str,
    tuning: Tuning,
) -> tuple[Tensor, GDNState]:
    precision = precision_for(q.dtype) if precision == AUTO_PRECISION else precision
    assert precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {precision!r}"
    normalizer = eps is not None
    B, H, T, S, D = q.shape
    P = padded_width(D)
    BR = tuning.scan_block_rows
    G = 2 if normalizer else 1
    R = P + BR if normalizer else P  # the z row and its padding rows follow kv's rows
    BH = B * H
    device = q.device
    tf32 = precision == "tf32"
    spans = chunk_spans(chunk_starts, T)
    has_init = initial_state is not None
    init = _pack_state(initial_state, B, H, D, P, R, normalizer, device) if has_init else None
    reason = unsupported_reason(q, beta, gamma, (q, k, v, q_rot, k_rot))
    assert reason is None, f"fused GDN: {reason}"
    # Made on the device, one fill kernel per chunk start: a host-to-device copy here would make
    # the call impossible to capture in a CUDA graph (`sanawm.model.graphs`). Not `keep[start] =
    # 0.0`: assigning a number to one element of a CUDA tensor copies a CPU scalar tensor.
    keep = torch.ones(T, dtype=torch.float32, device=device)
    for start, _ in spans:
        keep[start : start + 1].fill_(0.0)

    (q, sq), (k, sk), (v, sv), (q_rot, sqr), (k_rot, skr) = (_strides5(x) for x in (q, k, v, q_rot, k_rot))
    beta_strides = tuple(beta.stride())
    gamma = gamma.to(torch.float32).reshape(BH, T).contiguous()
    # A bf16 input is one exact bf16 piece; beta * x of two bf16 numbers needs two; anything
    # else (fp16 / fp32 values, their products) takes three.
    x_pieces = 1 if q.dtype == torch.bfloat16 else 3
    weighted_pieces = 2 if q.dtype == torch.bfloat16 and beta.dtype == torch.bfloat16 else 3

    # Matrices that later feed the tensor cores are stored pre-split: 3 bf16 planes ("ieee")
    # or one fp32 plane ("tf32").
    pieces, piece_dtype = (1, torch.float32) if tf32 else (3, torch.bfloat16)
    w = torch.empty(BH, T, G, pieces, P, P, device=device, dtype=piece_dtype)
    u = torch.empty(BH, T, R, P, device=device, dtype=torch.float32)
    block_n = min(tuning.transition_block_n, P)
    pieces_mma = tf32 and x_pieces == 1 and weighted_pieces <= tuning.tf32_transition_pieces
    common = dict(
        A_PIECES=weighted_pieces, B_PIECES=x_pieces, TF32=tf32, TF32_MMA=tf32 and not pieces_mma,
        INTERPRET=_INTERPRETED, P=P, G=G, R=R, Z_ROWS=BR,
        BLOCK_S=tuning.transition_block_s, BLOCK_N=block_n,
        num_warps=tuning.transition_warps, num_stages=tuning.transition_stages,
    )  # fmt: skip
    products = [  # (left factor, right factor, W slot, U row, decay, row sum)
        (k_rot, skr, k_rot, skr, 0, 0, True, False),
        (v, sv, k_rot, skr, 0, 0, False, False),
    ]
    if normalizer:
        products.append((k, sk, k, sk, 1, P, True, True))
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        for a, sa, b, sb, group, row0, decay, row_sum in products:
            _transition_kernel[(T, BH, P // block_n)](
                a, *sa, b, *sb, beta, *beta_strides, gamma, w, u, H, T, S, D,
                GROUP=group, ROW0=row0, DECAY=decay, ROW_SUM=row_sum, **common,
            )  # fmt: skip

        hist = torch.empty(BH, T, R, P, device=device, dtype=torch.float32)
        read = torch.empty(BH, T, pieces, R, P, device=device, dtype=piece_dtype)
        final = torch.empty(BH, R, P, device=device, dtype=torch.float32)
        init = init if has_init else final  # unread without an initial state
        kv_blocks = triton.cdiv(D, BR)
        _scan_kernel[(BH, kv_blocks + (1 if normalizer else 0))](
            w, u, hist, read, init, final, keep, T, kv_blocks,
            G=G, R=R, P=P, BLOCK_R=BR, HAS_INIT=has_init, TF32=tf32, INTERPRET=_INTERPRETED,
            num_warps=tuning.scan_warps, num_stages=tuning.scan_stages,
        )  # fmt: skip

        out = torch.empty_like(q_rot)
        if out.stride(-1) != 1:
            out = torch.empty(q_rot.shape, device=device, dtype=q_rot.dtype)
        bs = tuning.readout_block_s
        _readout_kernel[(triton.cdiv(S, bs), T, BH)](
            q_rot, *sqr, q, *sq, out, *tuple(out.stride()[:4]), read, H, T, S, D,
            0.0 if eps is None else float(eps),
            NORMALIZER=normalizer, Q_PIECES=x_pieces, TF32=tf32, INTERPRET=_INTERPRETED, R=R, P=P, BLOCK_S=bs,
            num_warps=tuning.readout_warps, num_stages=tuning.readout_stages,
        )  # fmt: skip

    kv = final[:, :D, :D].reshape(B, H, D, D)
    z = final[:, P, :D].reshape(B, H, D) if normalizer else None
    return out, GDNState(kv, z)


def gdn_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_rot: Tensor,
    k_rot: Tensor,
    beta: Tensor,
    gamma: Tensor,
    *,
    eps: float,
    chunk_starts: Sequence[int] | None = None,
    initial_state: GDNState | None = None,
    precision: str = AUTO_PRECISION,
) -> tuple[Tensor, GDNState]:
    """`sanawm.ops.gdn.gdn` by the fused kernels (see the module docstring for `precision`)."""
    check_shapes("gdn", dict(q=q, k=k, v=v, q_rot=q_rot, k_rot=k_rot), beta, gamma)
    return _fused(
        q, k, v, q_rot, k_rot, beta, gamma, eps=eps, chunk_starts=chunk_starts,
        initial_state=initial_state, precision=precision, tuning=DEFAULT_TUNING,
    )  # fmt: skip


def delta_rule_triton(
    q_rot: Tensor,
    k_rot: Tensor,
    v: Tensor,
    beta: Tensor,
    gamma: Tensor,
    *,
    chunk_starts: Sequence[int] | None = None,
    initial_state: GDNState | None = None,
    precision: str = AUTO_PRECISION,
) -> tuple[Tensor, GDNState]:
    """`sanawm.ops.gdn.delta_rule` by the fused kernels (no normaliser; z is None)."""
    check_shapes("delta_rule", dict(q=q_rot, k=k_rot, v=v), beta, gamma)
    return _fused(
        q_rot, k_rot, v, q_rot, k_rot, beta, gamma, eps=None, chunk_starts=chunk_starts,
        initial_state=initial_state, precision=precision, tuning=DEFAULT_TUNING,
    )  # fmt: skip


__all__ = [
    "gdn_triton",
    "delta_rule_triton",
    "unsupported_reason",
    "padded_width",
    "Tuning",
    "DEFAULT_TUNING",
    "PRECISIONS",
    "AUTO_PRECISION",
    "precision_for",
    "MAX_HEAD_DIM",
]
