"""The UCPE camera transform of one tensor in one pass, with the squared norms the camera
branch needs around it.

    out, ss_in, ss_out = ucpe_transform_op(x, m, cos, sin, inverse_rope)

x (B, H, N, D) (any strides, unit last stride), m (B, N, 4, 4) float32 (any strides): each
group of 4 channels of the first half of a head becomes m[b, n] @ group; the second half's
D/4 channel pairs are rotated by cos / sin (N, D/4) float32 (by -sin with `inverse_rope`), as
`sanawm.model.camera` does it. ss_in / ss_out (B, H, N) float32 are the sums of squares of x
and of the result over D: the GDN blocks' key-inflation factor and the RMS clamp read them, so
neither needs another pass over the tensors. The result comes token-major ((B, N, H, D) memory).

- `ucpe_transform_reference`: the model's own transform (`sanawm.model.camera`) plus the sums,
  in PyTorch (the op's CPU implementation; the tests hold the kernel to it).
- On CUDA (custom op `sanawm::ucpe_transform`, one opaque node under torch.compile): one Triton
  program per block of tokens and head reads x once and writes the result once; the 4x4
  products and the rotation are done in float32 and rounded once. The attention layers take
  this path where `kernel_applies` (16-bit CUDA inference).

On an H200 (961 frames: 106,480 tokens x 20 heads of 112, bf16) one call takes 0.58-0.62 ms
(1.5-1.65 TB/s of the bytes one pass moves) where inductor's kernel for the same transform and
sums takes 2.0 ms (scripts/bench_ucpe.py, benchmarks/logs/bench_ucpe_h200.log); the compiled
961-frame forward went 2.816 -> 2.744 s side by side (benchmarks/README.md, run 23). The first
version, a program per token block walking all tokens of one head before the next head, with
the 4 x 4 products as broadcast-and-sum over 4-D tiles, took 1.8 ms per call and made the
forward 8 ms slower (run 21).
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the reference runs
    triton = None

BLOCK_N = 64
"""Tokens per program (the fastest of 16 / 32 / 64 / 128 on an H200, scripts/bench_ucpe.py)."""
NUM_WARPS = 4


def kernel_applies(x: Tensor) -> bool:
    """CUDA with Triton, 16-bit activations (float32 models keep the reference's float64
    rotation), no gradient asked for (the kernel has no backward)."""
    wants_grad = torch.is_grad_enabled() and x.requires_grad
    return x.is_cuda and triton is not None and x.dtype in (torch.bfloat16, torch.float16) and not wants_grad


def ucpe_transform_reference(
    x: Tensor, m: Tensor, cos: Tensor, sin: Tensor, inverse_rope: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """The model's transform (`sanawm.model.camera.split_apply`) and the sums of squares."""
    from sanawm.model.camera import split_apply
    from sanawm.model.rope import Rotation

    out = split_apply(x, m, Rotation(cos, sin, torch.complex(cos.double(), sin.double())), inverse_rope)
    work = torch.promote_types(x.dtype, torch.float32)
    return out, x.to(work).square().sum(-1), out.to(work).square().sum(-1)


@torch.library.custom_op("sanawm::ucpe_transform", mutates_args=(), device_types="cuda")
def ucpe_transform_op(
    x: Tensor, m: Tensor, cos: Tensor, sin: Tensor, inverse_rope: bool
) -> tuple[Tensor, Tensor, Tensor]:
    B, H, N, D = x.shape
    out = torch.empty(B, N, H, D, device=x.device, dtype=x.dtype).transpose(1, 2)  # token-major, as x comes
    ss_in = torch.empty(B, H, N, device=x.device, dtype=torch.float32)
    ss_out = torch.empty_like(ss_in)
    launch(x, m, cos, sin, inverse_rope, out, ss_in, ss_out)
    return out, ss_in, ss_out


@ucpe_transform_op.register_kernel("cpu")
def _ucpe_transform_cpu(x: Tensor, m: Tensor, cos: Tensor, sin: Tensor, inverse_rope: bool):
    out, ss_in, ss_out = ucpe_transform_reference(x, m, cos, sin, inverse_rope)
    B, H, N, D = x.shape
    token_major = torch.empty(B, N, H, D, dtype=x.dtype).transpose(1, 2)
    return token_major.copy_(out), ss_in.float(), ss_out.float()


@ucpe_transform_op.register_fake
def _ucpe_transform_fake(x: Tensor, m: Tensor, cos: Tensor, sin: Tensor, inverse_rope: bool):
    B, H, N, D = x.shape
    out = x.new_empty(B, N, H, D).transpose(1, 2)
    return out, x.new_empty(B, H, N, dtype=torch.float32), x.new_empty(B, H, N, dtype=torch.float32)


def launch(x: Tensor, m: Tensor, cos: Tensor, sin: Tensor, inverse_rope: bool, out: Tensor, ss_in: Tensor,
           ss_out: Tensor, *, block_n: int = BLOCK_N, num_warps: int = NUM_WARPS) -> None:  # fmt: skip
    """Run the kernel: x, out (B, H, N, D) with unit last strides; ss_* (B, H, N) contiguous."""
    B, H, N, D = x.shape
    assert D % 8 == 0 and x.stride(-1) == 1 and out.stride(-1) == 1, "ucpe_transform: head width / layout"
    assert cos.shape == sin.shape == (N, D // 4) and cos.dtype == sin.dtype == torch.float32
    cos, sin = cos.contiguous(), sin.contiguous()
    grid = (B * H * triton.cdiv(N, block_n),)
    _ucpe_kernel[grid](
        x, *x.stride()[:3], m, *m.stride(), cos, sin, out, *out.stride()[:3], ss_in, ss_out, B * H, H, N,
        D=D, D_P=triton.next_power_of_2(D), INVERSE=inverse_rope, BLOCK_N=block_n, num_warps=num_warps,
    )  # fmt: skip


if triton is not None:

    @triton.jit
    def _ucpe_kernel(
        x_ptr, x_sb, x_sh, x_sn,
        m_ptr, m_sb, m_sn, m_si, m_sj,
        cos_ptr, sin_ptr,
        out_ptr, o_sb, o_sh, o_sn,
        ss_in_ptr, ss_out_ptr,
        BH, H, N,
        D: tl.constexpr, D_P: tl.constexpr, INVERSE: tl.constexpr, BLOCK_N: tl.constexpr,
    ):  # fmt: skip
        # Heads vary fastest between consecutive programs: the heads of a token block sit side
        # by side in the token-major activations, and the block's matrices and angles are read
        # from memory once and from L2 by the other heads.
        pid = tl.program_id(0)
        bh = pid % BH
        b = (bh // H).to(tl.int64)  # clip offsets pass 2^31 elements in long batched clips
        h = bh % H
        n = (pid // BH) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = n < N
        d = tl.arange(0, D_P)
        tile_ok = n_ok[:, None] & (d < D)[None, :]
        x_tile = x_ptr + b * x_sb + h * x_sh + n.to(tl.int64)[:, None] * x_sn + d[None, :]
        x = tl.load(x_tile, mask=tile_ok, other=0.0).to(tl.float32)  # each token's head, contiguous

        # Both halves are, per group g of 4 channels (c = 4g + i), out_i = sum_j A_ij x_j: the
        # token's matrix m[b, n] in the first half; in the second half the rotations of the
        # group's two channel pairs (2 x 2 blocks on the diagonal). The four channels of a group
        # are split out of the tile (they are adjacent in each thread's registers).
        G: tl.constexpr = D_P // 4
        x0, x1, x2, x3 = _quarters(x, BLOCK_N, G)
        g = tl.arange(0, G)
        in_first = (g < D // 8)[None, :]
        m_row = m_ptr + b * m_sb + n.to(tl.int64) * m_sn
        r0 = _matrix_row(m_row + 0 * m_si, m_sj, n_ok, x0, x1, x2, x3)
        r1 = _matrix_row(m_row + 1 * m_si, m_sj, n_ok, x0, x1, x2, x3)
        r2 = _matrix_row(m_row + 2 * m_si, m_sj, n_ok, x0, x1, x2, x3)
        r3 = _matrix_row(m_row + 3 * m_si, m_sj, n_ok, x0, x1, x2, x3)
        # Second half: group g holds pairs 2 (g - D/8) and 2 (g - D/8) + 1 of the rotation.
        PAIRS: tl.constexpr = D // 4
        pair = 2 * (g - D // 8)
        angle_ok = n_ok[:, None] & ((pair >= 0) & (pair < PAIRS))[None, :]
        angle = n.to(tl.int64)[:, None] * PAIRS + pair[None, :]
        c_a = tl.load(cos_ptr + angle, mask=angle_ok, other=0.0)
        s_a = tl.load(sin_ptr + angle, mask=angle_ok, other=0.0)
        c_b = tl.load(cos_ptr + angle + 1, mask=angle_ok, other=0.0)
        s_b = tl.load(sin_ptr + angle + 1, mask=angle_ok, other=0.0)
        if INVERSE:
            s_a = -s_a
            s_b = -s_b
        o0 = tl.where(in_first, r0, x0 * c_a - x1 * s_a)
        o1 = tl.where(in_first, r1, x0 * s_a + x1 * c_a)
        o2 = tl.where(in_first, r2, x2 * c_b - x3 * s_b)
        o3 = tl.where(in_first, r3, x2 * s_b + x3 * c_b)
        out = tl.reshape(tl.join(tl.join(o0, o2), tl.join(o1, o3)), (BLOCK_N, D_P))
        o_tile = out_ptr + b * o_sb + h * o_sh + n.to(tl.int64)[:, None] * o_sn + d[None, :]
        tl.store(o_tile, out.to(out_ptr.dtype.element_ty), mask=tile_ok)

        # Sums of squares over the head (the input as stored, the output as computed; padded
        # channels are zero in both).
        tl.store(ss_in_ptr + bh * N + n, tl.sum(x * x, axis=1), mask=n_ok)
        tl.store(ss_out_ptr + bh * N + n, tl.sum(o0 * o0 + o1 * o1 + o2 * o2 + o3 * o3, axis=1), mask=n_ok)

    @triton.jit
    def _quarters(x, BLOCK_N: tl.constexpr, G: tl.constexpr):
        """(BLOCK_N, 4 G) -> channels 4g, 4g + 1, 4g + 2, 4g + 3 as four (BLOCK_N, G) tiles."""
        even, odd = tl.split(tl.reshape(x, (BLOCK_N, G, 2, 2)))  # [.., a, c] = channel 4g + 2a + c
        x0, x2 = tl.split(even)
        x1, x3 = tl.split(odd)
        return x0, x1, x2, x3

    @triton.jit
    def _matrix_row(m_i, m_sj, n_ok, x0, x1, x2, x3):
        """Row i of each token's matrix (pointers m_i, (BLOCK_N,)) times its groups' channels."""
        m0 = tl.load(m_i, mask=n_ok, other=0.0)[:, None]
        m1 = tl.load(m_i + m_sj, mask=n_ok, other=0.0)[:, None]
        m2 = tl.load(m_i + 2 * m_sj, mask=n_ok, other=0.0)[:, None]
        m3 = tl.load(m_i + 3 * m_sj, mask=n_ok, other=0.0)[:, None]
        return m0 * x0 + m1 * x1 + m2 * x2 + m3 * x3


__all__ = ["ucpe_transform_op", "ucpe_transform_reference", "kernel_applies", "launch"]
