"""The UCPE camera transform of one tensor in one pass, with the squared norms the camera
branch needs around it.

    out, ss_in, ss_out = ucpe_transform(x, m, cos, sin, inverse_rope)

x (B, H, N, D) (any strides, unit last stride), m (B, N, 4, 4) float32 (any strides): each
group of 4 channels of the first half of a head becomes m[b, n] @ group; the second half's
D/4 channel pairs are rotated by cos / sin (N, D/4) (by -sin with `inverse_rope`), as
`sanawm.model.camera` does it. ss_in / ss_out (B, H, N) float32 are the sums of squares of x
and of the result over D: the GDN blocks' key-inflation factor and the RMS clamp read them, so
neither needs another pass over the tensors.

- `ucpe_transform_reference`: the model's own transform (`sanawm.model.camera`) plus the sums,
  in PyTorch (what the CPU runs and the tests hold the kernel to).
- On CUDA (custom op `sanawm::ucpe_transform`, one opaque node under torch.compile): one Triton
  program per block of tokens and head reads x once and writes the result once; the 4x4
  products and the rotation are done in float32 and rounded once.

Why: in a compiled 961-frame forward on an H200 inductor's kernels for these transforms and
their norms took ~6 ms per GDN block where reading and writing the tensors once takes ~1.2 ms
(benchmarks/README.md). Opt-in (`use_camera_kernel`) until measured on the GPU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the reference runs
    triton = None

BLOCK_N = 32
"""Tokens per program."""
NUM_WARPS = 4


def ucpe_transform(x: Tensor, m: Tensor, cos: Tensor, sin: Tensor, inverse_rope: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(transformed x, ss_in, ss_out); the kernel where `kernel_applies`, else the reference."""
    if kernel_applies(x):
        return ucpe_transform_op(x, m, cos.float(), sin.float(), inverse_rope)
    return ucpe_transform_reference(x, m, cos, sin, inverse_rope)


def kernel_applies(x: Tensor) -> bool:
    """CUDA with Triton, 16-bit activations (float32 models keep the reference's float64
    rotation), no gradient asked for (the kernel has no backward)."""
    wants_grad = torch.is_grad_enabled() and x.requires_grad
    return x.is_cuda and triton is not None and x.dtype in (torch.bfloat16, torch.float16) and not wants_grad


def ucpe_transform_reference(
    x: Tensor, m: Tensor, cos: Tensor, sin: Tensor, inverse_rope: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """The model's transform (`sanawm.model.camera._split_apply`) and the sums of squares."""
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
    groups, pairs = D // 8, D // 4
    grid = (triton.cdiv(N, block_n), B * H)
    _ucpe_kernel[grid](
        x, *x.stride()[:3], m, *m.stride(), cos, sin, out, *out.stride()[:3], ss_in, ss_out, H, N,
        D=D, GROUPS=groups, GROUPS_P=triton.next_power_of_2(groups), PAIRS=pairs,
        PAIRS_P=triton.next_power_of_2(pairs), INVERSE=inverse_rope, BLOCK_N=block_n, num_warps=num_warps,
    )  # fmt: skip


if triton is not None:

    @triton.jit
    def _ucpe_kernel(
        x_ptr, x_sb, x_sh, x_sn,
        m_ptr, m_sb, m_sn, m_si, m_sj,
        cos_ptr, sin_ptr,
        out_ptr, o_sb, o_sh, o_sn,
        ss_in_ptr, ss_out_ptr,
        H, N,
        D: tl.constexpr, GROUPS: tl.constexpr, GROUPS_P: tl.constexpr, PAIRS: tl.constexpr,
        PAIRS_P: tl.constexpr, INVERSE: tl.constexpr, BLOCK_N: tl.constexpr,
    ):  # fmt: skip
        bh = tl.program_id(1)
        b = bh // H
        h = bh % H
        n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = n < N
        x_row = x_ptr + b * x_sb + h * x_sh + n * x_sn  # (BLOCK_N,) pointers
        o_row = out_ptr + b * o_sb + h * o_sh + n * o_sn

        # First half: GROUPS groups of 4 channels, each multiplied by m[b, n] (4 x 4).
        g = tl.arange(0, GROUPS_P)
        j = tl.arange(0, 4)
        ch = g[:, None] * 4 + j[None, :]  # (GROUPS_P, 4) channel index
        ok = n_ok[:, None, None] & (g < GROUPS)[None, :, None]
        grp = tl.load(x_row[:, None, None] + ch[None, :, :], mask=ok, other=0.0).to(tl.float32)
        m_row = m_ptr + b * m_sb + n * m_sn
        mat = tl.load(m_row[:, None, None] + j[None, :, None] * m_si + j[None, None, :] * m_sj,
                      mask=n_ok[:, None, None], other=0.0)  # fmt: skip  # (BLOCK_N, 4 rows i, 4 cols j)
        first = tl.sum(mat[:, None, :, :] * grp[:, :, None, :], axis=3)  # (BLOCK_N, GROUPS_P, 4 rows i)
        tl.store(o_row[:, None, None] + ch[None, :, :], first.to(out_ptr.dtype.element_ty), mask=ok)

        # Second half: PAIRS pairs rotated by the token's angles (loaded and stored as
        # (pair, 2) tiles, so each token's half-head is one contiguous access).
        p = tl.arange(0, PAIRS_P)
        p_ok = n_ok[:, None] & (p < PAIRS)[None, :]
        pair_ch = D // 2 + 2 * p[:, None] + tl.arange(0, 2)[None, :]  # (PAIRS_P, 2)
        pair_ok = p_ok[:, :, None]
        re, im = tl.split(tl.load(x_row[:, None, None] + pair_ch[None, :, :], mask=pair_ok, other=0.0).to(tl.float32))
        c = tl.load(cos_ptr + n[:, None] * PAIRS + p[None, :], mask=p_ok, other=0.0)
        s = tl.load(sin_ptr + n[:, None] * PAIRS + p[None, :], mask=p_ok, other=0.0)
        if INVERSE:
            s = -s
        out_re = re * c - im * s
        out_im = re * s + im * c
        rotated = tl.join(out_re, out_im).to(out_ptr.dtype.element_ty)
        tl.store(o_row[:, None, None] + pair_ch[None, :, :], rotated, mask=pair_ok)

        # Sums of squares over the head (the input as stored, the output as computed).
        ss_x = tl.sum(tl.sum(grp * grp, axis=2), axis=1) + tl.sum(re * re + im * im, axis=1)
        ss_o = tl.sum(tl.sum(first * first, axis=2), axis=1) + tl.sum(out_re * out_re + out_im * out_im, axis=1)
        tl.store(ss_in_ptr + bh * N + n, ss_x, mask=n_ok)
        tl.store(ss_out_ptr + bh * N + n, ss_o, mask=n_ok)


def use_camera_kernel(model: nn.Module, on: bool = True) -> nn.Module:
    """Run the camera transforms of every attention layer of `model` through `ucpe_transform`
    (in place; where `kernel_applies`, i.e. CUDA inference in 16-bit, the Triton kernel)."""
    for module in model.modules():
        if hasattr(module, "camera_kernel"):
            module.camera_kernel = on
    return model


__all__ = ["ucpe_transform", "ucpe_transform_reference", "kernel_applies", "launch", "use_camera_kernel"]
