"""The frame-wise GDN ops and the temporal convs against independent float64 references."""

import pytest
import torch
import torch.nn.functional as F

import sanawm.ops.gdn.scan as scan_module
from sanawm.ops.gdn import GDNState, delta_rule, gdn, gdn_reference, recurrent_scan, select_backend
from sanawm.ops.gdn.scan import torch_scan
from sanawm.ops.temporal import frame_conv_channels_first as frame_conv
from sanawm.ops.temporal import key_conv

B, H, T, S, D = 2, 3, 7, 5, 8


def make_inputs(seed=0, T=T):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    # Keys are ReLU features scaled by 1/sqrt(D*S) in the model: keep that magnitude so the
    # delta rule's transitions are contractions, as they are in practice.
    q = F.relu(rnd(B, H, T, S, D))
    k = F.relu(rnd(B, H, T, S, D)) / (D * S) ** 0.5
    v = rnd(B, H, T, S, D)
    q_rot, k_rot = q + 0.3 * rnd(B, H, T, S, D), k + 0.05 * rnd(B, H, T, S, D)
    beta = torch.rand(B, H, T, S, generator=g, dtype=torch.float64)
    gamma = 0.5 + 0.5 * torch.rand(B, H, T, generator=g, dtype=torch.float64)
    return q, k, v, q_rot, k_rot, beta, gamma


def close(a, b, tol=1e-10):
    return (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


CHUNKINGS = {"bidirectional": None, "chunk_causal": [0, 3, 5], "causal": list(range(T))}


@pytest.mark.parametrize("chunks", CHUNKINGS.values(), ids=CHUNKINGS.keys())
def test_gdn_matches_recurrent_reference(chunks):
    x = make_inputs()
    out, state = gdn(*x, eps=1e-8, chunk_starts=chunks)
    ref, ref_state = gdn_reference(*x, eps=1e-8, chunk_starts=chunks)
    assert close(out, ref)
    assert close(state.kv, ref_state.kv) and close(state.z, ref_state.z)


@pytest.mark.parametrize("chunks", CHUNKINGS.values(), ids=CHUNKINGS.keys())
def test_delta_rule_matches_recurrent_reference(chunks):
    q, k, v, q_rot, k_rot, beta, gamma = make_inputs(1)
    out, state = delta_rule(q_rot, k_rot, v, beta, gamma, chunk_starts=chunks)
    ref, ref_state = gdn_reference(q_rot, k_rot, v, q_rot, k_rot, beta, gamma, eps=None, chunk_starts=chunks)
    assert state.z is None and ref_state.z is None
    assert close(out, ref) and close(state.kv, ref_state.kv)


def flip_and_shift(x, fill):
    """Reverse the frame axis (dim 2) and delay by one frame, padding with `fill`."""
    flipped = x.flip(2)
    pad = torch.full_like(flipped[:, :, :1], fill)
    return torch.cat([pad, flipped[:, :, :-1]], dim=2)


def test_bidirectional_is_forward_plus_shifted_backward():
    """out = (num_f + num_b) / (den_f + den_b + eps) with the backward scan run on the
    reversed sequence delayed by one frame (zero keys/values/beta, decay 1 in front)."""
    q, k, v, q_rot, k_rot, beta, gamma = make_inputs(2)
    eps = 1e-8
    num_f, den_f, _ = recurrent_scan(q, k, v, q_rot, k_rot, beta, gamma)
    num_b, den_b, _ = recurrent_scan(
        q.flip(2), flip_and_shift(k, 0.0), flip_and_shift(v, 0.0), q_rot.flip(2), flip_and_shift(k_rot, 0.0),
        flip_and_shift(beta, 0.0), flip_and_shift(gamma, 1.0),
    )  # fmt: skip
    expected = (num_f + num_b.flip(2)) / (den_f + den_b.flip(2) + eps)[..., None]
    out, _ = gdn(q, k, v, q_rot, k_rot, beta, gamma, eps=eps)
    assert close(out, expected)


def test_state_carried_across_chunks_equals_one_shot():
    x = make_inputs(3)
    split = 4
    full, full_state = gdn(*x, eps=1e-8, chunk_starts=[0, split])
    first = [t[:, :, :split] for t in x]
    second = [t[:, :, split:] for t in x]
    out1, state1 = gdn(*first, eps=1e-8)
    out2, state2 = gdn(*second, eps=1e-8, initial_state=state1)
    assert close(torch.cat([out1, out2], dim=2), full)
    assert close(state2.kv, full_state.kv) and close(state2.z, full_state.z)
    # the same for the camera delta rule
    q, k, v, q_rot, k_rot, beta, gamma = x
    full_c, _ = delta_rule(q_rot, k_rot, v, beta, gamma, chunk_starts=[0, split])
    head = [t[:, :, :split] for t in (q_rot, k_rot, v, beta, gamma)]
    tail = [t[:, :, split:] for t in (q_rot, k_rot, v, beta, gamma)]
    c1, s1 = delta_rule(*head)
    c2, _ = delta_rule(*tail, initial_state=s1)
    assert close(torch.cat([c1, c2], dim=2), full_c)


def test_delta_rule_overwrites_instead_of_accumulating():
    """Analytic case: orthonormal keys, beta = 1, no decay. After writing v then v' under
    the same keys, reading with those keys returns v' exactly (linear attention: v + v')."""
    n = 4  # tokens per frame <= D
    basis = torch.linalg.qr(torch.randn(D, D, dtype=torch.float64))[0][:n]  # orthonormal rows
    keys = basis.expand(1, 1, 2, n, D)
    values = torch.randn(1, 1, 2, n, D, dtype=torch.float64)
    beta = torch.ones(1, 1, 2, n, dtype=torch.float64)
    gamma = torch.ones(1, 1, 2, dtype=torch.float64)
    causal = [0, 1]
    out, state = delta_rule(keys, keys, values, beta, gamma, chunk_starts=causal)
    assert close(out[0, 0, 0], values[0, 0, 0]) and close(out[0, 0, 1], values[0, 0, 1])
    assert close(state.kv[0, 0] @ basis.T, values[0, 0, 1].T)
    ref, _ = gdn_reference(keys, keys, values, keys, keys, beta, gamma, eps=None, chunk_starts=causal)
    assert close(ref, out)
    # normaliser: z . k = 1 for every stored key, so the main branch returns v' as well
    out_main, main_state = gdn(keys, keys, values, keys, keys, beta, gamma, eps=0.0, chunk_starts=causal)
    assert close(main_state.z[0, 0] @ basis.T, torch.ones(n, dtype=torch.float64))
    assert close(out_main[0, 0, 1], values[0, 0, 1])


def test_full_decay_forgets_the_past():
    """gamma_t = 0 wipes the state before frame t is written: forward outputs of frame t then
    only depend on frame t."""
    q, k, v, q_rot, k_rot, beta, gamma = make_inputs(4)
    gamma = torch.zeros_like(gamma)
    causal = list(range(T))
    out, _ = gdn(q, k, v, q_rot, k_rot, beta, gamma, eps=1e-8, chunk_starts=causal)
    for t in range(T):
        single = [x[:, :, t : t + 1] for x in (q, k, v, q_rot, k_rot, beta, gamma)]
        alone, _ = gdn(*single, eps=1e-8)
        assert close(out[:, :, t : t + 1], alone)


def test_float32_path_close_to_float64():
    x64 = make_inputs(5)
    out64, _ = gdn(*x64, eps=1e-8)
    out32, _ = gdn(*(t.float() for t in x64), eps=1e-8)
    assert (out32.double() - out64).norm() / out64.norm() < 1e-5


def test_low_precision_inputs_are_computed_in_float32():
    """bf16 inputs are converted (block by block) and scanned in float32; the result is the
    float32 computation on the same values, rounded to bf16."""
    xb = [t.bfloat16() for t in make_inputs(6)]
    out, state = gdn(*xb, eps=1e-8, chunk_starts=[0, 3])
    ref, ref_state = gdn(*(t.float() for t in xb), eps=1e-8, chunk_starts=[0, 3])
    assert out.dtype == torch.bfloat16 and state.kv.dtype == torch.float32
    assert torch.equal(out, ref.bfloat16()) and torch.equal(state.kv, ref_state.kv)


def test_frame_blocking_does_not_change_results(monkeypatch):
    x = make_inputs(7)
    whole, _ = gdn(*x, eps=1e-8, chunk_starts=[0, 2])
    monkeypatch.setattr(scan_module, "_BLOCK_ELEMENTS", 1)  # one frame per block
    blocked, _ = gdn(*x, eps=1e-8, chunk_starts=[0, 2])
    assert close(blocked, whole, tol=1e-14)


def test_bad_chunk_starts_and_shapes_are_asserted():
    # Internal contract, not user input: an AssertionError with the shapes, never a UserInputError.
    x = make_inputs()
    with pytest.raises(AssertionError, match="chunk starts"):
        gdn(*x, eps=1e-8, chunk_starts=[1, 3])
    with pytest.raises(AssertionError, match="beta"):
        gdn(*x[:5], x[5][..., :2], x[6], eps=1e-8)


# ---------------------------------------------------------------------------------------
# Gradients of the training path (the PyTorch scan) against the reference, in float64
# ---------------------------------------------------------------------------------------


def _grads(fn, inputs, init, weights):
    """Gradients of sum(w_out * out) + sum(w_kv * kv) [+ sum(w_z * z)] w.r.t. inputs and state."""
    leaves = [t.clone().requires_grad_(True) for t in inputs]
    state = None if init is None else GDNState(*(None if s is None else s.clone().requires_grad_(True) for s in init))
    out, final = fn(leaves, state)
    loss = (weights[0] * out).sum() + (weights[1] * final.kv).sum()
    if final.z is not None:
        loss = loss + (weights[2] * final.z).sum()
    wrt = leaves + ([] if state is None else [s for s in state if s is not None])
    return torch.autograd.grad(loss, wrt)


def _random_state(seed, normalizer):
    g = torch.Generator().manual_seed(seed)
    kv = 0.1 * torch.randn(B, H, D, D, generator=g, dtype=torch.float64)
    z = 0.1 * torch.rand(B, H, D, generator=g, dtype=torch.float64) if normalizer else None
    return GDNState(kv, z)


@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "initial_state"])
@pytest.mark.parametrize("chunks", CHUNKINGS.values(), ids=CHUNKINGS.keys())
def test_gdn_gradients_match_reference(chunks, with_state):
    x = make_inputs(11)
    init = _random_state(12, normalizer=True) if with_state else None
    g = torch.Generator().manual_seed(13)
    weights = [torch.randn(s, generator=g, dtype=torch.float64) for s in ((B, H, T, S, D), (B, H, D, D), (B, H, D))]

    def ours(t, state):
        return gdn(*t, eps=1e-3, chunk_starts=chunks, initial_state=state, backend="torch")

    def ref(t, state):
        return gdn_reference(*t, eps=1e-3, chunk_starts=chunks, initial_state=state)

    for got, want in zip(_grads(ours, x, init, weights), _grads(ref, x, init, weights), strict=True):
        assert close(got, want)


@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "initial_state"])
@pytest.mark.parametrize("chunks", CHUNKINGS.values(), ids=CHUNKINGS.keys())
def test_delta_rule_gradients_match_reference(chunks, with_state):
    q, k, v, q_rot, k_rot, beta, gamma = make_inputs(14)
    init = _random_state(15, normalizer=False) if with_state else None
    g = torch.Generator().manual_seed(16)
    weights = [torch.randn(s, generator=g, dtype=torch.float64) for s in ((B, H, T, S, D), (B, H, D, D))]

    def ours(t, state):
        return delta_rule(*t, chunk_starts=chunks, initial_state=state, backend="torch")

    def ref(t, state):
        qr, kr, vv, bb, gg = t
        return gdn_reference(qr, kr, vv, qr, kr, bb, gg, eps=None, chunk_starts=chunks, initial_state=state)

    inputs = [q_rot, k_rot, v, beta, gamma]
    for got, want in zip(_grads(ours, inputs, init, weights), _grads(ref, inputs, init, weights), strict=True):
        assert close(got, want)


def test_torch_scan_passes_numerical_gradcheck():
    """Finite differences, independent of both implementations' autograd (tiny sizes)."""
    g = torch.Generator().manual_seed(17)
    shape = (1, 1, 3, 2, 3)
    rnd = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)  # noqa: E731
    inputs = [rnd(*shape), 0.5 * rnd(*shape), rnd(*shape), rnd(*shape), 0.5 * rnd(*shape), rnd(*shape[:4]),
              0.5 + 0.5 * rnd(*shape[:3])]  # fmt: skip
    inputs = [t.requires_grad_(True) for t in inputs]

    def fn(*t):
        out, state = torch_scan(*t, eps=0.1, chunk_starts=[0, 1], initial_state=None)
        return out, state.kv, state.z

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)


def test_auto_backend_reports_its_choice(caplog):
    x = make_inputs()
    q, beta, gamma = x[0], x[5], x[6]
    choice = select_backend("auto", q, beta, gamma, x[:5])
    assert choice.name == "torch" and "cpu" in choice.reason
    assert select_backend("torch", q, beta, gamma, x[:5]).name == "torch"
    with caplog.at_level("DEBUG", logger="sanawm.ops.gdn"):
        gdn(*x, eps=1e-8)
    assert any("GDN backend auto -> torch" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------
# Temporal convs
# ---------------------------------------------------------------------------------------


def causal_conv_naive(x, w):
    """x (B, T, S, C), w (C, K): y[t] = sum_i w_i x[t-K+1+i] via F.conv1d."""
    Bx, Tx, Sx, C = x.shape
    K = w.shape[1]
    seq = x.permute(0, 2, 3, 1).reshape(Bx * Sx, C, Tx)
    y = F.conv1d(F.pad(seq, (K - 1, 0)), w[:, None, :], groups=C)
    return y.reshape(Bx, Sx, C, Tx).permute(0, 3, 1, 2)


def test_key_conv_bidirectional_matches_forward_plus_backward():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 3, 5, generator=g, dtype=torch.float64)
    w = torch.randn(5, 4, generator=g, dtype=torch.float64)
    fwd = causal_conv_naive(x, w)
    bwd = causal_conv_naive(x.flip(1), w).flip(1)
    expected = fwd + bwd - w[:, -1] * x
    assert close(key_conv(x, w), expected)
    # chunk-causal: the backward part restarts in every chunk, the forward part does not
    starts = [0, 2, 5]
    expected = fwd.clone()
    for a, b in zip(starts, starts[1:] + [6]):
        seg = x[:, a:b]
        expected[:, a:b] += causal_conv_naive(seg.flip(1), w).flip(1) - w[:, -1] * seg
    assert close(key_conv(x, w, chunk_starts=starts), expected)
    # context: the frames before x feed the forward part only
    out_tail = key_conv(x[:, 2:], w, chunk_starts=[0, 3], context=x[:, :2])
    assert close(out_tail, expected[:, 2:])


def test_frame_conv_matches_naive_loop():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 7, 3, generator=g, dtype=torch.float64)  # (B, C, T, S)
    w = torch.randn(5, 4, 3, 1, generator=g, dtype=torch.float64)
    starts = [0, 3, 4]
    ends = {2, 3, 6}  # last frame of each chunk: its right neighbour is hidden

    def naive(x, chunk_ends):
        out = torch.zeros(2, 5, x.shape[2], 3, dtype=torch.float64)
        for t in range(x.shape[2]):
            for i, dt in enumerate((-1, 0, 1)):
                s = t + dt
                if s < 0 or s >= x.shape[2] or (dt == 1 and t in chunk_ends):
                    continue
                out[:, :, t] += torch.einsum("oc,bcs->bos", w[:, :, i, 0], x[:, :, s])
        return out

    assert close(frame_conv(x, w), naive(x, {6}))
    full = frame_conv(x, w, chunk_starts=starts)
    assert close(full, naive(x, ends))
    tail = frame_conv(x[:, :, 3:], w, chunk_starts=[0, 1], context=x[:, :, :3])
    assert close(tail, full[:, :, 3:])


def test_gdn_state_type():
    q, k, v, q_rot, k_rot, beta, gamma = make_inputs()
    _, state = gdn(q, k, v, q_rot, k_rot, beta, gamma, eps=1e-8)
    assert isinstance(state, GDNState) and state.kv.shape == (B, H, D, D) and state.z.shape == (B, H, D)
