"""The fused Triton GDN path and the backend dispatch.

The kernel tests run the kernels in Triton's CPU interpreter at tiny sizes against the float64
recurrent reference. The interpreter must be chosen before triton is first imported, so
`test_kernels_in_interpreter` re-runs this file in a subprocess with TRITON_INTERPRET=1, where
the `interpreted` tests run (run them directly with `TRITON_INTERPRET=1 pytest <this file>`).
The interpreter computes tf32 dots in full fp32 and rounds to bf16 by truncation, so the
GPU-only numerics (tf32 rounding, tensor-core sums) are checked by scripts/check_gdn_gpu.py.
Without triton only the dispatch and argument tests run.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _tiny_models import tiny_camera_dit
from _triton_interpreter import HAVE_TRITON, INTERPRETING, build_for_sm90, rerun_interpreted

from sanawm.errors import UserInputError
from sanawm.model import build_preset
from sanawm.model.config import SanaWMConfig
from sanawm.ops.gdn import GDNState, delta_rule, gdn, gdn_reference

needs_triton = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")
interpreted = pytest.mark.skipif(
    not (HAVE_TRITON and INTERPRETING), reason="kernel tests run under TRITON_INTERPRET=1 (test_kernels_in_interpreter)"
)


def make_inputs(shape, dtype=torch.float32, seed=0, beta_dtype=None, layout="model"):
    """GDN inputs with the model's magnitudes; layout "model" stores them as (B, T, S, H, D)."""
    B, H, T, S, D = shape
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    q = F.relu(rnd(B, H, T, S, D))
    k = F.relu(rnd(B, H, T, S, D)) / (D * S) ** 0.5
    v = rnd(B, H, T, S, D)
    q_rot, k_rot = q + 0.3 * rnd(B, H, T, S, D), k + 0.05 * rnd(B, H, T, S, D)
    beta = torch.rand(B, H, T, S, generator=g, dtype=torch.float64).to(beta_dtype or dtype)
    gamma = (0.5 + 0.5 * torch.rand(B, H, T, generator=g, dtype=torch.float64)).float()
    big = [t.to(dtype) for t in (q, k, v, q_rot, k_rot)]
    if layout == "model":
        big = [t.permute(0, 2, 3, 1, 4).contiguous().permute(0, 3, 1, 2, 4) for t in big]
    return (*big, beta, gamma)


def rel(a, ref):
    return ((a.double() - ref).norm() / ref.norm()).item()


# ---------------------------------------------------------------------------------------
# Dispatch (no triton needed)
# ---------------------------------------------------------------------------------------


def test_auto_and_torch_backends_agree_on_cpu():
    x = make_inputs((1, 2, 4, 6, 8), seed=1)
    auto, auto_state = gdn(*x, eps=1e-8, chunk_starts=[0, 2])
    plain, plain_state = gdn(*x, eps=1e-8, chunk_starts=[0, 2], backend="torch")
    assert torch.equal(auto, plain) and torch.equal(auto_state.kv, plain_state.kv)
    cam, _ = delta_rule(x[3], x[4], x[2], x[5], x[6], backend="auto")
    cam_plain, _ = delta_rule(x[3], x[4], x[2], x[5], x[6], backend="torch")
    assert torch.equal(cam, cam_plain)


def test_bad_backend_and_unavailable_triton_raise():
    x = make_inputs((1, 1, 2, 4, 8))
    with pytest.raises(AssertionError, match="backend must be one of"):
        gdn(*x, eps=1e-8, backend="cuda")
    # CPU tensors outside the interpreter: either triton is missing or it cannot run them.
    # The backend comes from the model's config (checked by SanaWMConfig), so this is an
    # environment problem raised as RuntimeError, not a UserInputError.
    if not INTERPRETING:
        with pytest.raises(RuntimeError, match="backend 'triton'"):
            delta_rule(x[3], x[4], x[2], x[5], x[6], backend="triton")
    with pytest.raises(UserInputError, match="gdn_backend"):
        SanaWMConfig(gdn_backend="fused")
    with pytest.raises(UserInputError, match="gdn_precision"):
        SanaWMConfig(gdn_precision="bf16")


def test_use_gdn_precision_sets_every_gdn_layer():
    from sanawm.model.attention import GDNAttention
    from sanawm.ops.gdn import use_gdn_precision

    model = build_preset("tiny", depth=3, hidden_size=32, head_dim=16, softmax_blocks=(1,))
    layers = [m for m in model.modules() if isinstance(m, GDNAttention)]
    assert len(layers) == 2 and {m.precision for m in layers} == {"auto"}
    assert use_gdn_precision(model, "ieee") is model and {m.precision for m in layers} == {"ieee"}
    assert not hasattr(model.blocks[1].attn, "precision")  # the softmax block


@needs_triton
def test_auto_precision_is_tf32_for_16_bit_inputs_only():
    """16-bit outputs are rounded to 16 bits anyway; float32 keeps the exact-product path."""
    from sanawm.ops.gdn.fused import precision_for

    assert precision_for(torch.bfloat16) == precision_for(torch.float16) == "tf32"
    assert precision_for(torch.float32) == "ieee"


# ---------------------------------------------------------------------------------------
# Kernels in the interpreter
# ---------------------------------------------------------------------------------------


@needs_triton
@pytest.mark.skipif(INTERPRETING, reason="already in the interpreter")
def test_kernels_in_interpreter():
    rerun_interpreted(__file__)


@needs_triton
def test_argument_errors():
    from sanawm.ops.gdn import fused

    # Arguments the model builds itself: a bad one is a bug (AssertionError), not user input.
    x = make_inputs((1, 1, 3, 16, 8), seed=7)
    with pytest.raises(AssertionError, match="precision"):
        run(fused, x, "gdn", None, precision="bf16")
    with pytest.raises(AssertionError, match="normaliser"):
        run(fused, x, "gdn", None, init=GDNState(torch.zeros(1, 1, 8, 8), None))
    with pytest.raises(AssertionError, match="initial_state.kv"):
        run(fused, x, "delta_rule", None, init=GDNState(torch.zeros(1, 1, 4, 4), None))
    with pytest.raises(AssertionError, match="chunk starts"):
        fused.gdn_triton(*x, eps=1e-8, chunk_starts=[1])
    x64 = [t.double() for t in x]
    assert "dtype" in fused.unsupported_reason(x64[0], x64[5], x64[6], x64[:5])
    xg = [t.clone().requires_grad_(i == 1) for i, t in enumerate(x)]
    assert "backward" in fused.unsupported_reason(xg[0], xg[5], xg[6], xg[:5])


def reference(x, branch, chunks, init=None):
    x64 = [t.double() for t in x]
    init64 = None if init is None else GDNState(init.kv.double(), None if init.z is None else init.z.double())
    if branch == "gdn":
        return gdn_reference(*x64, eps=1e-8, chunk_starts=chunks, initial_state=init64)
    q, k, v, qr, kr, beta, gamma = x64
    return gdn_reference(qr, kr, v, qr, kr, beta, gamma, eps=None, chunk_starts=chunks, initial_state=init64)


def run(fused, x, branch, chunks, init=None, precision="ieee", tuning=None):
    q, k, v, qr, kr, beta, gamma = x
    if branch == "gdn":
        args, eps = (q, k, v, qr, kr, beta, gamma), 1e-8
    else:
        args, eps = (qr, kr, v, qr, kr, beta, gamma), None
    return fused._fused(
        *args, eps=eps, chunk_starts=chunks, initial_state=init, precision=precision,
        tuning=tuning or fused.DEFAULT_TUNING,
    )  # fmt: skip


def state_error(state, ref_state):
    err = rel(state.kv, ref_state.kv)
    if ref_state.z is not None:
        err = max(err, rel(state.z, ref_state.z))
    return err


CHUNKINGS = {"bidirectional": None, "chunk_causal": [0, 1, 3], "causal": [0, 1, 2, 3, 4]}


@pytest.fixture
def fused():
    from sanawm.ops.gdn import fused

    return fused


@interpreted
@pytest.mark.parametrize("branch", ["gdn", "delta_rule"])
@pytest.mark.parametrize("chunks", CHUNKINGS.values(), ids=CHUNKINGS.keys())
def test_interpreted_fp32_matches_float64_reference(fused, branch, chunks):
    # D = 20 pads to 32: two row blocks of kv in the scan, padded columns in every tile.
    x = make_inputs((1, 2, 5, 21, 20), seed=3)
    out, state = run(fused, x, branch, chunks)
    ref, ref_state = reference(x, branch, chunks)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert rel(out, ref) < 2e-6 and state_error(state, ref_state) < 2e-6
    assert (state.z is None) == (branch == "delta_rule")


@interpreted
@pytest.mark.parametrize("branch", ["gdn", "delta_rule"])
def test_interpreted_initial_state_and_token_blocks(fused, branch):
    """Seeded forward scan; S spread over several token blocks (not a multiple of the block)."""
    shape = (1, 2, 4, 37, 20)
    x = make_inputs(shape, seed=4, layout="contiguous")
    g = torch.Generator().manual_seed(5)
    init = GDNState(0.1 * torch.randn(1, 2, 20, 20, generator=g), torch.rand(1, 2, 20, generator=g))
    if branch == "delta_rule":
        init = GDNState(init.kv, None)
    # Several token blocks per frame and two column blocks per transition (P = 32).
    small = fused.Tuning(transition_block_s=16, transition_block_n=16, readout_block_s=16)
    out, state = run(fused, x, branch, [0, 2], init=init, tuning=small)
    ref, ref_state = reference(x, branch, [0, 2], init=init)
    assert rel(out, ref) < 2e-6 and state_error(state, ref_state) < 2e-6


@interpreted
@pytest.mark.parametrize("branch", ["gdn", "delta_rule"])
def test_interpreted_wider_scan_row_blocks(fused, branch):
    """32 state rows per scan program (fewer programs re-read each frame's W): same result.
    D = 40 pads to 64: two kv row blocks, the second partly padding, then the z block."""
    x = make_inputs((1, 2, 4, 21, 40), seed=7)
    out, state = run(fused, x, branch, [0, 2], tuning=fused.Tuning(scan_block_rows=32))
    ref, ref_state = reference(x, branch, [0, 2])
    assert rel(out, ref) < 2e-6 and state_error(state, ref_state) < 2e-6


@interpreted
@pytest.mark.parametrize("beta_dtype", [torch.bfloat16, torch.float32], ids=["bf16_beta", "fp32_beta"])
def test_interpreted_bf16_inputs(fused, beta_dtype):
    """bf16 inputs are used exactly: the fp32 state matches float64 on the same bf16 values,
    and the bf16 output is that result rounded (the interpreter truncates: < 2 bf16 ulps)."""
    x = make_inputs((1, 2, 4, 19, 16), dtype=torch.bfloat16, seed=6, beta_dtype=beta_dtype)
    for branch in ("gdn", "delta_rule"):
        out, state = run(fused, x, branch, [0, 3])
        ref, ref_state = reference(x, branch, [0, 3])
        assert out.dtype == torch.bfloat16 and state.kv.dtype == torch.float32
        assert state_error(state, ref_state) < 2e-6
        assert ((out.double() - ref).abs() <= 2 ** -7 * ref.abs() + 1e-6).all()


@interpreted
@pytest.mark.parametrize("beta_dtype", [torch.bfloat16, torch.float32])
def test_interpreted_tf32_with_transitions_from_pieces(fused, beta_dtype):
    """tf32 storage with the transition products from bf16 pieces (Tuning.tf32_transition_pieces):
    the fp32 W the tf32 scan reads, written by the pieces' products."""
    x = make_inputs((1, 2, 4, 19, 16), dtype=torch.bfloat16, seed=8, beta_dtype=beta_dtype)
    for branch in ("gdn", "delta_rule"):
        out, state = run(fused, x, branch, [0, 3], precision="tf32", tuning=fused.Tuning(tf32_transition_pieces=3))
        ref, ref_state = reference(x, branch, [0, 3])
        assert state_error(state, ref_state) < 2e-6  # the interpreter computes tf32 dots in fp32
        assert ((out.double() - ref).abs() <= 2**-7 * ref.abs() + 1e-6).all()


@interpreted
def test_interpreted_tf32_precision_runs(fused):
    x = make_inputs((1, 1, 3, 16, 8), seed=7)
    out, _ = run(fused, x, "gdn", None, precision="tf32")
    ref, _ = reference(x, "gdn", None)
    assert rel(out, ref) < 1e-3  # tf32 accuracy on a GPU; fp32 in the interpreter


@interpreted
def test_interpreted_model_forward(monkeypatch):
    """The tiny DiT with gdn_backend="triton" (interpreted kernels) matches gdn_backend="torch",
    and its kernels get the precision its config names (main and camera branch)."""
    from sanawm.ops.gdn import fused

    precisions = []
    kernels = fused._fused

    def spy(*args, **kwargs):
        precisions.append(kwargs["precision"])
        return kernels(*args, **kwargs)

    monkeypatch.setattr(fused, "_fused", spy)
    outputs = {}
    for backend in ("torch", "triton"):
        model, inputs = tiny_camera_dit(gdn_backend=backend, gdn_precision="tf32")
        with torch.no_grad():
            outputs[backend] = model(**inputs)
    ref = outputs["torch"]
    assert rel(outputs["triton"], ref.double()) < 1e-5  # the interpreter computes tf32 dots in fp32
    assert precisions == ["tf32", "tf32"]


@needs_triton
@pytest.mark.parametrize("tf32_mma", [True, False])
def test_transition_kernel_compiles_for_sm90_with_tf32_storage(tf32_mma):
    """Ahead-of-time build of the transition kernel for an H100 / H200 (Triton's own ptxas, no
    GPU) in tf32 precision, its products in tf32 or from bf16 pieces
    (Tuning.tf32_transition_pieces): tf32 or bf16 tensor-core instructions, W stored as fp32."""
    from sanawm.ops.gdn.fused import _transition_kernel

    const = dict(GROUP=0, G=2, R=144, ROW0=0, DECAY=True, ROW_SUM=False, Z_ROWS=16, A_PIECES=2, B_PIECES=1,
                 TF32=True, TF32_MMA=tf32_mma, INTERPRET=False, P=128, BLOCK_S=64, BLOCK_N=64)  # fmt: skip
    pointers = {"a_ptr": "*bf16", "b_ptr": "*bf16", "beta_ptr": "*bf16", "gamma_ptr": "*fp32", "w_ptr": "*fp32",
                "u_ptr": "*fp32"}  # fmt: skip
    compiled = build_for_sm90(_transition_kernel, pointers, const, num_warps=4)
    ptx = compiled.asm["ptx"]
    assert ".target sm_90" in ptx and compiled.asm["cubin"]
    kind = "f32.tf32.tf32" if tf32_mma else "f32.bf16.bf16"
    mma = [line for line in ptx.splitlines() if "wgmma.mma_async" in line]
    assert mma and all(kind in line for line in mma)
