"""The Triton forward kernel of `sanawm.ops.fp8_attention` (FP8 e4m3 softmax attention; FP8
tensor cores of sm89+, written and analysed for Hopper, sm90).

One program per (block of BLOCK_M queries, batch * head) streams every key tile of its head
(FlashAttention-2's online softmax), with both products on FP8 tensor cores:

    S   = (q8 . k8) * (s_q * s_k * scale * log2 e)        fp32, q8 (BLOCK_M, D), k8 (128, D)
    m'  = max(m, rowmax S);   P = 448 * 2^(S - m')         the running max, so P <= 448
    l   = l * 2^(m - m') + rowsum P                        fp32, from the unrounded P
    acc = acc * 2^(m - m') + e4m3(P) . v8                  fp32; each tile's product starts
                                                           from zero, then one fp32 FMA
    out = acc * s_v / l                                    bf16 (or the inputs' dtype)

The fixed factor 448 puts P's largest value of a row at e4m3's maximum; it cancels in acc / l.
Key tiles are 128 keys (K_BLOCK), the granularity of the keys' scales, so that the kernel's
running maxima are those of the float32 emulation (`emulate` in `sanawm.ops.fp8_attention`).

Head dim: q8 / k8 / v8 hold D = 112 bytes per token and head in HBM; the kernel loads them
into D_PAD = 128-wide tiles with masked (zero) columns, because Triton's blocks are powers of
two. The masked bytes are not read (no extra HBM / L2 traffic), but both matrix products run
at 128: 14 % more tensor-core work than 112 needs (the softmax work, exp2 per score, is not
affected).

Hopper's FP8 tensor cores add into their accumulator with ~14 significand bits; over the
~830 key tiles of a 106,480-token attention the truncation would add up. So each tile's P . V
starts from a zero accumulator (4 tensor-core steps of 32 keys) and joins acc in fp32, in the
same FMA that rescales acc (no extra instructions; 255 instead of 235 registers per thread
for BLOCK_M 128, still without spills: scripts/check_fp8_attention_sm90.py). Passing acc
to the tensor cores instead (PRECISE_PV=False) is measured by the benchmark, not used. (With
`max_num_imprecise_acc` ptxas serialises the wgmma instructions: not used either.)

exp2 is the other bottleneck at FP8 speed: one MUFU op per score, at 1/8 of the FMA units'
rate, takes about as long per tile as both FP8 products. With SPLIT the key tile is processed
as two halves of 64 keys, and the second half's exp2 can run as a polynomial on the FMA units
instead (Cody-Waite: 2^x = 2^j * 2^f, j = round(x), |f| <= 1/2, degree 2 with p(0) = 1;
relative error <= 2.0e-3, below e4m3's rounding of P, 3-6 %), as FlashAttention-4 does on
Blackwell: POLY=1 on every tile (1/2 of the exp2s), POLY=2 on every other tile (1/4). In
Triton's code for sm90 the polynomial costs more issue slots than it saves (see POLY_CONFIGS),
so the autotuner (one choice per sequence-length bucket) runs without it;
scripts/bench_fp8_attention.py times all configurations.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from sanawm.ops.fp8_attention import K_BLOCK

LOG2_448 = tl.constexpr(8.807354922057604)  # log2(448)
LOG2E = 1.4426950408889634


@triton.jit
def _exp2_poly(x):
    """2^x on the FMA units for x <= 9 (2^-127 for anything below -127)."""
    x = tl.maximum(x, -127.0)
    shifted = x + 12582912.0  # 1.5 * 2^23: the sum's low mantissa bits hold round(x)
    j = shifted - 12582912.0
    f = x - j
    p = 1.0 + f * (0.70293594 + f * 0.23985956)  # minimax relative error on [-1/2, 1/2]: 2.0e-3
    bits = p.to(tl.int32, bitcast=True) + (shifted.to(tl.int32, bitcast=True) << 23)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _to_e4m3(p, EXACT_ROUNDING: tl.constexpr):
    if EXACT_ROUNDING:
        # Triton's CPU interpreter does not round fp32 -> e4m3 to nearest; rounding to 4
        # significant bits first (Veltkamp split) leaves it an exact conversion. GPU: unused.
        c = p * 1048577.0
        p = c - (c - p)
    return p.to(tl.float8e4nv)


@triton.jit
def _add_pv(p8, v, acc, PRECISE: tl.constexpr):
    """acc + p8 . v; PRECISE: the product starts from zero and joins acc with an fp32 add
    (Triton does not fold `acc + dot` of FP8 operands into the dot: in the sm90 PTX the first
    wgmma of the product has scale-d 0, the rescale of acc and the add are one fma.rn.f32)."""
    if PRECISE:
        acc = acc + tl.dot(p8, v)
    else:
        acc = tl.dot(p8, v, acc)
    return acc


@triton.jit
def _scores(q, K_ptr, stride_kn, start, offs_n, offs_d, NK, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr):
    """q8 . k8^T of keys start + offs_n, fp32; keys past NK get -inf."""
    keys = start + offs_n
    if MASKED:
        mask = (keys < NK)[:, None] & (offs_d < HEAD_DIM)[None, :]
    else:
        mask = (offs_d < HEAD_DIM)[None, :]
    k = tl.load(K_ptr + keys[:, None] * stride_kn + offs_d[None, :], mask=mask, other=0.0)
    s = tl.dot(q, tl.trans(k))
    if MASKED:
        s = tl.where((keys < NK)[None, :], s, float("-inf"))
    return s


@triton.jit
def _values(VT_ptr, stride_vd, start, offs_n, offs_d, NK, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr):
    """v8 of keys start + offs_n as a (keys, D_PAD) operand, from the (D, N) storage."""
    keys = start + offs_n
    if MASKED:
        mask = (offs_d < HEAD_DIM)[:, None] & (keys < NK)[None, :]
    else:
        mask = (offs_d < HEAD_DIM)[:, None]
    vt = tl.load(VT_ptr + offs_d[:, None] * stride_vd + keys[None, :], mask=mask, other=0.0)
    return tl.trans(vt)


@triton.jit
def _key_tile(
    acc, l_i, m_i, q, row_scale, K_ptr, VT_ptr, KS_ptr, stride_kn, stride_vd, start, NK,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
    SPLIT: tl.constexpr, POLY: tl.constexpr, EXACT_ROUNDING: tl.constexpr, PRECISE_PV: tl.constexpr,
):  # fmt: skip
    offs_d = tl.arange(0, D_PAD)
    # Scores in log2 units: one scale per query row times this tile's key scale.
    rs = row_scale * tl.load(KS_ptr + start // BLOCK_N)
    if SPLIT:
        HALF: tl.constexpr = BLOCK_N // 2
        offs_h = tl.arange(0, HALF)
        s0 = _scores(q, K_ptr, stride_kn, start, offs_h, offs_d, NK, HEAD_DIM, MASKED)
        s1 = _scores(q, K_ptr, stride_kn, start + HALF, offs_h, offs_d, NK, HEAD_DIM, MASKED)
        m_new = tl.maximum(m_i, tl.maximum(tl.max(s0, 1), tl.max(s1, 1)) * rs)
        shift = m_new - LOG2_448
        p0 = tl.math.exp2(s0 * rs[:, None] - shift[:, None])
        if POLY:
            p1 = _exp2_poly(s1 * rs[:, None] - shift[:, None])
        else:
            p1 = tl.math.exp2(s1 * rs[:, None] - shift[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + (tl.sum(p0, 1) + tl.sum(p1, 1))
        acc = acc * alpha[:, None]
        v0 = _values(VT_ptr, stride_vd, start, offs_h, offs_d, NK, HEAD_DIM, MASKED)
        acc = _add_pv(_to_e4m3(p0, EXACT_ROUNDING), v0, acc, PRECISE_PV)
        v1 = _values(VT_ptr, stride_vd, start + HALF, offs_h, offs_d, NK, HEAD_DIM, MASKED)
        acc = _add_pv(_to_e4m3(p1, EXACT_ROUNDING), v1, acc, PRECISE_PV)
    else:
        offs_n = tl.arange(0, BLOCK_N)
        s = _scores(q, K_ptr, stride_kn, start, offs_n, offs_d, NK, HEAD_DIM, MASKED)
        m_new = tl.maximum(m_i, tl.max(s, 1) * rs)
        p = tl.math.exp2(s * rs[:, None] - (m_new - LOG2_448)[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        v = _values(VT_ptr, stride_vd, start, offs_n, offs_d, NK, HEAD_DIM, MASKED)
        acc = _add_pv(_to_e4m3(p, EXACT_ROUNDING), v, acc, PRECISE_PV)
    return acc, l_i, m_new


# Sizes vary with the clip length: not specialised on (their divisibility would compile the
# kernel anew for some lengths). Strides stay specialised (16-byte vector loads).
@triton.jit(do_not_specialize=["NQ", "NK", "n_kblocks", "n_bucket"])
def fp8_attention_fwd(
    Q, K, VT, QS, KS, VS, O,
    stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vd,
    stride_ob, stride_on, stride_oh,
    H, NQ, NK, n_kblocks, qk_scale, n_bucket,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    SPLIT: tl.constexpr, POLY: tl.constexpr, EXACT_ROUNDING: tl.constexpr, PRECISE_PV: tl.constexpr,
):  # fmt: skip
    """POLY: 0, 1 or 2 (see the module docstring; 1 and 2 need SPLIT).
    q8 (B, H, NQ, D), k8 (B, H, NK, D), v8^T (B, H, D, NK) e4m3 (unit last strides); scales
    QS (B, H, NQ), KS (B, H, n_kblocks), VS (B, H, D) fp32, contiguous; O (B, NQ, H, D)."""
    tl.static_assert(BLOCK_N == 128)  # = K_BLOCK, the keys' scale blocks
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D_PAD)
    rows = offs_m < NQ
    q_ptr = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    q = tl.load(q_ptr + offs_m[:, None] * stride_qn + offs_d[None, :],
                mask=rows[:, None] & (offs_d < HEAD_DIM)[None, :], other=0.0)  # fmt: skip
    # Rows past NQ get scale 1 (not 0: 0 * -inf would be NaN in the masked tile).
    row_scale = tl.load(QS + bh.to(tl.int64) * NQ + offs_m, mask=rows, other=1.0) * qk_scale
    K_ptr = K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    VT_ptr = VT + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
    KS_ptr = KS + bh.to(tl.int64) * n_kblocks

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D_PAD], tl.float32)
    full_tiles = NK // BLOCK_N
    if POLY == 2:  # pairs of tiles, the polynomial in the second half of the second one
        for t in range(0, full_tiles // 2):
            acc, l_i, m_i = _key_tile(
                acc, l_i, m_i, q, row_scale, K_ptr, VT_ptr, KS_ptr, stride_kn, stride_vd, 2 * t * BLOCK_N, NK,
                HEAD_DIM, D_PAD, BLOCK_N, False, SPLIT, False, EXACT_ROUNDING, PRECISE_PV,
            )  # fmt: skip
            acc, l_i, m_i = _key_tile(
                acc, l_i, m_i, q, row_scale, K_ptr, VT_ptr, KS_ptr, stride_kn, stride_vd, (2 * t + 1) * BLOCK_N, NK,
                HEAD_DIM, D_PAD, BLOCK_N, False, SPLIT, True, EXACT_ROUNDING, PRECISE_PV,
            )  # fmt: skip
        if full_tiles % 2 == 1:
            acc, l_i, m_i = _key_tile(
                acc, l_i, m_i, q, row_scale, K_ptr, VT_ptr, KS_ptr, stride_kn, stride_vd, (full_tiles - 1) * BLOCK_N,
                NK, HEAD_DIM, D_PAD, BLOCK_N, False, SPLIT, False, EXACT_ROUNDING, PRECISE_PV,
            )  # fmt: skip
    else:
        for t in range(0, full_tiles):
            acc, l_i, m_i = _key_tile(
                acc, l_i, m_i, q, row_scale, K_ptr, VT_ptr, KS_ptr, stride_kn, stride_vd, t * BLOCK_N, NK,
                HEAD_DIM, D_PAD, BLOCK_N, False, SPLIT, POLY == 1, EXACT_ROUNDING, PRECISE_PV,
            )  # fmt: skip
    if full_tiles * BLOCK_N < NK:
        acc, l_i, m_i = _key_tile(
            acc, l_i, m_i, q, row_scale, K_ptr, VT_ptr, KS_ptr, stride_kn, stride_vd, full_tiles * BLOCK_N, NK,
            HEAD_DIM, D_PAD, BLOCK_N, True, SPLIT, POLY == 1, EXACT_ROUNDING, PRECISE_PV,
        )  # fmt: skip
    v_scale = tl.load(VS + bh.to(tl.int64) * HEAD_DIM + offs_d, mask=offs_d < HEAD_DIM, other=0.0)
    out = acc * (v_scale[None, :] / l_i[:, None])
    o_ptr = O + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    tl.store(o_ptr + offs_m[:, None] * stride_on + offs_d[None, :], out.to(O.dtype.element_ty),
             mask=rows[:, None] & (offs_d < HEAD_DIM)[None, :])  # fmt: skip


def _config(block_m: int, warps: int, stages: int, poly: int) -> triton.Config:
    return triton.Config({"BLOCK_M": block_m, "SPLIT": poly > 0, "POLY": poly}, num_warps=warps, num_stages=stages)


# (BLOCK_M, warps, stages, POLY). 8 warps: two warpgroups of 64 query rows, one program per SM
# (255 registers per thread); BLOCK_M 64 with 4 warps: two programs per SM, whose exp2 and
# matrix products can overlap. The autotuner picks among CONFIGS.
CONFIGS = [
    _config(128, 8, 3, 0),
    _config(128, 8, 2, 0),
    _config(64, 4, 2, 0),
]
# The polynomial exp2 is not autotuned: compiled for sm90 (scripts/check_fp8_attention_sm90.py)
# a tile without it already needs as many instruction issue slots (~1,130 cycles per 128 x 128
# block) as MUFU (1,056) and tensor-core (1,024) cycles, and the polynomial adds more issue
# slots (1,490-1,740) than it saves MUFU cycles. The benchmark's sweep still times them.
POLY_CONFIGS = [
    _config(128, 8, 3, 1),
    _config(128, 8, 3, 2),
    _config(64, 4, 2, 2),
]

fp8_attention_autotuned = triton.autotune(CONFIGS, key=["n_bucket", "HEAD_DIM"])(fp8_attention_fwd)


def launch(
    q8: Tensor, k8: Tensor, vt8: Tensor, q_scale: Tensor, k_scale: Tensor, v_scale: Tensor, scale: float,
    out: Tensor, config: triton.Config | None = None, exact_rounding: bool = False, precise_pv: bool = True,
) -> Tensor:  # fmt: skip
    """Run the kernel into `out` (B, NQ, H, D); `config` None: autotuned (one of CONFIGS).
    precise_pv=False leaves P . V to the tensor cores' own accumulation (benchmarks only)."""
    assert q8.stride(-1) == k8.stride(-1) == vt8.stride(-1) == out.stride(-1) == 1, "unit last strides"
    q_scale, k_scale, v_scale = (s.float().contiguous() for s in (q_scale, k_scale, v_scale))
    B, H, NQ, D = q8.shape
    NK = k8.shape[2]
    args = (
        q8, k8, vt8, q_scale, k_scale, v_scale, out,
        q8.stride(0), q8.stride(1), q8.stride(2), k8.stride(0), k8.stride(1), k8.stride(2),
        vt8.stride(0), vt8.stride(1), vt8.stride(2), out.stride(0), out.stride(1), out.stride(2),
        H, NQ, NK, k_scale.shape[-1], scale * LOG2E, max(NQ, NK).bit_length(),
    )  # fmt: skip
    meta = dict(HEAD_DIM=D, D_PAD=max(16, triton.next_power_of_2(D)), BLOCK_N=K_BLOCK, EXACT_ROUNDING=exact_rounding,
                PRECISE_PV=precise_pv)  # fmt: skip
    if config is None:
        grid = lambda m: (triton.cdiv(NQ, m["BLOCK_M"]), B * H)  # noqa: E731
        fp8_attention_autotuned[grid](*args, **meta)
    else:
        grid = (triton.cdiv(NQ, config.kwargs["BLOCK_M"]), B * H)
        fp8_attention_fwd[grid](*args, **meta, **config.kwargs, num_warps=config.num_warps,
                                num_stages=config.num_stages)  # fmt: skip
    return out


def compile_for_sm90(config: triton.Config, head_dim: int = 112, precise_pv: bool = True):
    """Compile the kernel ahead of time for an sm90 GPU (no GPU needed: Triton's own ptxas),
    specialised as a launch on the model's tensors is (16-byte aligned pointers, strides
    divisible by 16, bf16 output). Returns Triton's compiled kernel (`.asm["ptx"]`,
    `.asm["cubin"]`, `.metadata.shared`): scripts/check_fp8_attention_sm90.py and the tests
    read the instructions from it."""
    import inspect

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = list(inspect.signature(fp8_attention_fwd.fn).parameters)
    const = dict(HEAD_DIM=head_dim, D_PAD=max(16, triton.next_power_of_2(head_dim)), BLOCK_N=K_BLOCK,
                 EXACT_ROUNDING=False, PRECISE_PV=precise_pv, **config.kwargs)  # fmt: skip
    pointers = {"Q": "*fp8e4nv", "K": "*fp8e4nv", "VT": "*fp8e4nv", "QS": "*fp32", "KS": "*fp32", "VS": "*fp32",
                "O": "*bf16"}  # fmt: skip
    signature = {n: pointers.get(n, "constexpr" if n in const else "fp32" if n == "qk_scale" else "i32") for n in names}
    aligned = [n for n in names if n in pointers or n.startswith("stride")]
    source = ASTSource(
        fp8_attention_fwd, signature, constexprs={(names.index(n),): v for n, v in const.items()},
        attrs={(names.index(n),): [["tt.divisibility", 16]] for n in aligned},
    )  # fmt: skip
    options = dict(num_warps=config.num_warps, num_stages=config.num_stages)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)


__all__ = ["K_BLOCK", "CONFIGS", "POLY_CONFIGS", "fp8_attention_fwd", "fp8_attention_autotuned", "launch", "compile_for_sm90"]
