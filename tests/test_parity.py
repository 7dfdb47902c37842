"""Parity with the reference implementation on the `public_tiny` fixture.

The fixture's expected output was computed on an H100 by the reference, whose GDN blocks run
fused Triton kernels that multiply in bfloat16 and store intermediates (I - k^T beta k,
v^T beta k, numerators, denominators) in bfloat16 even for a float32 model. Our model is
exact float32, so it cannot match those roundings bit for bit: it lands at 1.3e-3 relative
L2 (every structural alternative tried lands at 1e-2 or worse). The second test shows the
gap is that rounding: emulating the kernels' bfloat16 steps brings the error down to the
level at which bfloat16 rounding itself is chaotic (a 1e-6 input change moves a bf16 run
by ~8e-4).
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sanawm.model.attention as attention
from sanawm.model import load_official

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def fixture():
    return load_file(DATA / "public_tiny_io.safetensors")


def run(model, io):
    with torch.no_grad():
        return model(io["latents"], io["timestep"], io["text"], io["text_mask"], io["raymap"], io["chunk_plucker"])


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_tiny_matches_reference_output(fixture):
    model = load_official(DATA / "public_tiny_state.safetensors")
    out = run(model, fixture)
    assert out.shape == fixture["expected"].shape == (2, 16, 5, 4, 6)
    assert rel(out, fixture["expected"]) < 2e-3


# ---------------------------------------------------------------------------------------
# Emulation of the reference's bfloat16 Triton GDN kernels (tests only).
# ---------------------------------------------------------------------------------------


def _bf16(t):
    return t.bfloat16().float()


def _kernel_scan(q, k, v, q_rot, k_rot, beta, gamma, eps):
    """Bidirectional GDN as the fused kernel computes it: bf16 dot operands, bf16 transition
    storage, fp32 states, bf16 numerator / denominator. eps None: numerator only."""
    Bq, Hq, Tq, Sq, Dq = q.shape
    eye = torch.eye(Dq)
    w_kv = _bf16(eye - _bf16(k_rot).transpose(-1, -2) @ _bf16(beta[..., None] * k_rot))
    u_kv = _bf16(_bf16(k_rot).transpose(-1, -2) @ _bf16(beta[..., None] * v))
    w_z = _bf16(eye - _bf16(k).transpose(-1, -2) @ _bf16(beta[..., None] * k))
    u_z = (beta[..., None] * k).sum(-2)

    def scan(frames, read_shift):
        m = torch.zeros(Bq, Hq, Dq, Dq)
        z = torch.zeros(Bq, Hq, Dq)
        ms, zs = [torch.zeros(Bq, Hq, Dq, Dq)] * Tq, [torch.zeros(Bq, Hq, Dq)] * Tq
        for t in frames:
            m = gamma[:, :, t, None, None] * (w_kv[:, :, t] @ _bf16(m)) + u_kv[:, :, t]
            z = gamma[:, :, t, None] * (w_z[:, :, t] @ z[..., None])[..., 0] + u_z[:, :, t]
            ms[t - read_shift], zs[t - read_shift] = m, z
        return torch.stack(ms, 2), torch.stack(zs, 2)

    m_f, z_f = scan(range(Tq), 0)
    m_b, z_b = scan(range(Tq - 1, 0, -1), 1)
    num = _bf16(_bf16(q_rot) @ _bf16(m_f + m_b))
    if eps is None:
        return num
    den = _bf16((q * (z_f + z_b)[..., None, :]).sum(-1))
    return num / (den[..., None] + eps)


def test_gap_is_the_reference_kernels_bf16_rounding(fixture, monkeypatch):
    expected = fixture["expected"]
    exact_error = rel(run(load_official(DATA / "public_tiny_state.safetensors"), fixture), expected)

    monkeypatch.setattr(attention, "gdn", lambda *x, eps, **kw: (_kernel_scan(*x, eps), None))
    monkeypatch.setattr(
        attention, "delta_rule", lambda q_rot, k_rot, v, beta, gamma, **kw: (
            _kernel_scan(q_rot, k_rot, v, q_rot, k_rot, beta, gamma, None), None)
    )  # fmt: skip
    emulated = run(load_official(DATA / "public_tiny_state.safetensors"), fixture)
    emulated_error = rel(emulated, expected)
    assert emulated_error < 1.1e-3
    assert emulated_error < 0.75 * exact_error
