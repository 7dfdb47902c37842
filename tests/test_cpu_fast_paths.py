"""CPU fast paths of the streaming hot loop, each held to the plain form it replaces."""

from __future__ import annotations

import pytest
import torch

from sanawm.model.rope import apply_rope, apply_rope_pairs, rope_angles, rotation


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("inverse", [False, True])
def test_complex_rope_equals_pairwise_rope(dtype, inverse):
    # Heads layout from a transposed token tensor (not contiguous), and a half-head slice
    # (what the camera branch rotates): both go through the complex path.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 48, 3, 64, generator=g).to(dtype).transpose(1, 2)
    for part in (x, x[..., 32:]):
        rot = rotation(rope_angles(part.shape[-1], 3, 4, 4, frame_offset=11))
        fast, plain = apply_rope(part, rot, inverse=inverse), apply_rope_pairs(part, rot, inverse=inverse)
        assert fast.dtype == plain.dtype == dtype
        # Same float64 products and sums; at most a last-bit difference where a CPU's scalar
        # complex multiply fuses them.
        torch.testing.assert_close(fast, plain, rtol=1e-6 if dtype != torch.bfloat16 else 8e-3, atol=1e-7)


def test_complex_rope_gradient_matches_pairwise():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 12, 16, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 2, 12, 16, generator=g, dtype=torch.float64)
    rot = rotation(rope_angles(16, 3, 2, 2))
    (fast,) = torch.autograd.grad((apply_rope(x, rot) * w).sum(), x)
    (plain,) = torch.autograd.grad((apply_rope_pairs(x, rot) * w).sum(), x)
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-14)


def test_vae_conv3d_fast_path_matches_float64():
    from sanawm.vae.compact import conv3d

    torch.manual_seed(0)
    # The decoder's shapes that PyTorch sends to its plain kernel: one clip, few channels x frames x rows.
    for cin, cout, kernel, padding, frames, size in [(64, 64, 3, (0, 1, 1), 8, 32), (128, 512, 1, 0, 3, 16)]:
        conv = torch.nn.Conv3d(cin, cout, kernel, padding=padding)
        x = torch.randn(1, cin, frames, size, size)
        with torch.no_grad():
            fast = conv3d(conv, x)
            exact = torch.nn.functional.conv3d(x.double(), conv.weight.double(), conv.bias.double(), padding=padding)
        torch.testing.assert_close(fast.double(), exact, rtol=1e-5, atol=1e-5)


def test_chunked_vae_decode_with_fast_convs_matches_float64_decode():
    from sanawm.vae.compact import CompactVAE, CompactVAEConfig

    torch.manual_seed(0)
    vae = CompactVAE(CompactVAEConfig(channels=(16, 32, 64))).eval()
    latents = torch.randn(1, 16, 7, 4, 4)
    with torch.no_grad():
        decoder = vae.chunk_decoder()
        chunks = torch.cat([decoder.decode(latents[:, :, :4]), decoder.decode(latents[:, :, 4:])], dim=2)
        exact = vae.double().decode(latents.double())
    torch.testing.assert_close(chunks.double(), exact, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", [1, 2, 4])
@pytest.mark.parametrize("past", [0, 1, 3, 5])
def test_one_chunk_key_conv_matches_taps_in_float64(kernel, past):
    from sanawm.ops.temporal import key_conv, key_conv_taps

    g = torch.Generator().manual_seed(kernel * 10 + past)
    x = torch.randn(2, 3, 6, 16, generator=g)
    w = torch.randn(16, kernel, generator=g)
    context = torch.randn(2, past, 6, 16, generator=g) if past else None
    fast = key_conv(x, w, context=context)  # one chunk, float32 on the CPU: the depthwise conv
    exact = key_conv_taps(x.double(), w.double(), context=None if context is None else context.double())
    assert fast.dtype == torch.float32 and fast.shape == x.shape
    torch.testing.assert_close(fast.double(), exact, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("past", [0, 1, 2])
def test_one_chunk_frame_conv_matches_by_chunk_in_float64(past):
    from sanawm.ops.temporal import frame_conv_by_chunk, frame_conv_channels_first

    g = torch.Generator().manual_seed(past)
    tokens = torch.randn(2, 4, 6, 8, generator=g)  # (B, T, S, C), seen channels-first below
    x = tokens.permute(0, 3, 1, 2)
    w = torch.randn(8, 8, 3, 1, generator=g)
    context = torch.randn(2, 8, past, 6, generator=g) if past else None
    fast = frame_conv_channels_first(x, w, context=context)
    exact = frame_conv_by_chunk(x.double(), w.double(), context=None if context is None else context.double())
    torch.testing.assert_close(fast.double(), exact, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("with_context", [True, False])
@pytest.mark.parametrize("sliced", [False, True])
def test_ffn_token_layout_matches_nchw_convs_in_float64(with_context, sliced, monkeypatch):
    from sanawm.model import layers
    from sanawm.model.layers import GLUFeedForward

    if sliced:  # the FFN in slices of 4 frames (what long clips get)
        monkeypatch.setattr(layers, "_MAX_CONV_ELEMENTS", 4 * 48 * 20)
    torch.manual_seed(0)
    ffn = GLUFeedForward(16, 24, 3)
    for p in ffn.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 3, 5 * 4, 16)
    context = torch.randn(2, 16, 1, 5 * 4) if with_context else None
    with torch.no_grad():
        fast = ffn.temporal(ffn.spatial(x, 5, 4), None, context)  # the token-layout path
        ffn64 = ffn.double()
        frames = x.double().reshape(6, 5, 4, 16).permute(0, 3, 1, 2)
        y = ffn64._spatial(frames).reshape(2, 3, 16, 20).transpose(1, 2)  # the NCHW convs
        from sanawm.ops.temporal import frame_conv_by_chunk

        ctx64 = None if context is None else context.double()
        exact = (y + frame_conv_by_chunk(y, ffn64.t_conv.weight, context=ctx64)).permute(0, 2, 3, 1)
    torch.testing.assert_close(fast.double(), exact, rtol=1e-5, atol=1e-5)


def test_ffn_token_layout_runs_fp8_convs_as_their_row_matmuls():
    from sanawm.model.layers import GLUFeedForward
    from sanawm.ops.fp8 import FP8Conv1x1

    torch.manual_seed(1)
    ffn = GLUFeedForward(32, 48, 3)
    for p in ffn.parameters():
        torch.nn.init.normal_(p, std=0.2)
    for holder in (ffn.inverted_conv, ffn.point_conv):
        holder.conv = FP8Conv1x1.from_weight(holder.conv.weight.flatten(1), holder.conv.bias)
    x = torch.randn(1, 3, 4 * 5, 32)
    with torch.no_grad():
        tokens = ffn.spatial(x, 4, 5)  # FP8 matmuls on token rows
        frames = x.reshape(3, 4, 5, 32).permute(0, 3, 1, 2)
        nchw = ffn._spatial(frames).reshape(1, 3, 32, 20).transpose(1, 2)  # FP8Conv1x1.forward
    # The same quantised operands and sums (the depthwise conv's layout may order its sums differently).
    torch.testing.assert_close(tokens, nchw, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_camera_4x4_pointwise_form_equals_the_matmul(dtype):
    from sanawm.model.camera import apply_4x4_matmul, apply_4x4_pointwise

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 10, 24, generator=g).to(dtype)  # (B, H, N, G*4)
    m = torch.randn(2, 10, 4, 4, generator=g, dtype=torch.float64)
    exact = apply_4x4_matmul(x.double(), m)
    torch.testing.assert_close(apply_4x4_pointwise(x.double(), m), exact, rtol=1e-12, atol=1e-12)
    if dtype == torch.bfloat16:  # float32 work, bf16 result: one bf16 rounding of the exact value
        out = apply_4x4_pointwise(x, m.float().transpose(-1, -2))
        ref = apply_4x4_matmul(x.double(), m.transpose(-1, -2))
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.double(), ref, rtol=2**-8, atol=1e-6)


def test_fused_rms_norm_equals_written_out_form():
    from sanawm.model.layers import RMSNorm

    torch.manual_seed(0)
    norm = RMSNorm(48, 1e-5)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(2, 3, 7, 144)[..., 48:96]  # a strided slice, as q / k / v of a fused projection
    with torch.no_grad():
        x32 = x.float()
        written = norm.weight * (x32 * torch.rsqrt(x32.square().mean(dim=-1, keepdim=True) + norm.eps))
        torch.testing.assert_close(norm(x), written, rtol=1e-6, atol=1e-6)
        exact = norm.double()(x.double())
    torch.testing.assert_close(norm.float()(x).double(), exact, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("frames", [1, 3, 4])
@pytest.mark.parametrize("normalizer", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
def test_one_chunk_scan_matches_general_scan_and_float64_recurrence(frames, normalizer, with_state):
    import sanawm.ops.gdn.scan as scan
    from sanawm.ops.gdn import GDNState, gdn_reference

    g = torch.Generator().manual_seed(frames * 4 + normalizer * 2 + with_state)
    B, H, S, D = 2, 3, 5, 8
    q, k, v, q_rot, k_rot = (torch.rand(B, H, frames, S, D, generator=g) for _ in range(5))
    beta = torch.rand(B, H, frames, S, generator=g)
    gamma = 0.5 + 0.5 * torch.rand(B, H, frames, generator=g)
    state = None
    if with_state:
        state = GDNState(torch.randn(B, H, D, D, generator=g), torch.rand(B, H, D, generator=g) if normalizer else None)
    eps = 1e-3 if normalizer else None
    if not normalizer:
        q, k = q_rot, k_rot  # the delta rule's convention
    fast, fast_state = scan._one_chunk_scan(q, k, v, q_rot, k_rot, beta, gamma, eps, state)
    tr = scan._transitions(k, v, k_rot, beta, gamma, normalizer)
    zero = GDNState(torch.zeros(B, H, D, D), torch.zeros(B, H, D) if normalizer else None)
    kv_hist, z_hist, general_state = scan._history(tr, [(0, frames)], state or zero)
    general = scan._read_out(q, q_rot, kv_hist, z_hist, eps)
    # Two float32 orders of the same sums: the values reach ~1e3, where they cancel an element
    # can lose a few ulps of the tensor's largest value (an AMD EPYC read 1.3e-6 absolute on an
    # element of 0.018). Largest difference / largest value measured <= 2.2e-7 on every case.
    pairs = [(fast, general), (fast_state.kv, general_state.kv)]
    if normalizer:
        pairs.append((fast_state.z, general_state.z))
    for got, want in pairs:
        assert ((got - want).abs().max() / want.abs().max()).item() < 2e-6
    d64 = [t.double() for t in (q, k, v, q_rot, k_rot, beta, gamma)]
    s64 = None if state is None else GDNState(*(None if t is None else t.double() for t in state))
    exact, exact_state = gdn_reference(*d64, eps=eps, initial_state=s64)
    torch.testing.assert_close(fast.double(), exact, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast_state.kv.double(), exact_state.kv, rtol=1e-4, atol=1e-5)
