"""FP8 linears (`sanawm.ops.fp8`): the quantisation math and its CPU emulation.

CI has no GPU, so the CUDA path (`torch._scaled_mm`) is checked against `scaled_mm_emulated`
by scripts/bench_hopper.py on the device; here the emulation is held to independent float64
references, and the FP8 error of a layer, of a model and of the parity fixture is bounded.
"""

from pathlib import Path

import torch
from safetensors.torch import load_file

from sanawm.benchmark import make_inputs, random_model
from sanawm.model import load_official
from sanawm.ops.fp8 import (
    E4M3_MAX,
    FP8_DTYPE,
    FP8Conv1x1,
    FP8Linear,
    convert_to_fp8,
    dequantized_linear,
    fp8_matmul,
    quantize_rows,
    scaled_mm_emulated,
)

DATA = Path(__file__).parent / "data"


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def cos(a, b):
    return torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0).item()


def e4m3_grid() -> torch.Tensor:
    """Every finite e4m3 value, decoded bit pattern by bit pattern (float64, sorted)."""
    values = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(FP8_DTYPE).double()
    return values[values.isfinite()].unique()


def test_quantize_rows_rounds_each_row_to_the_nearest_e4m3_value():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 96, generator=g) * torch.logspace(-3, 3, 64)[:, None]
    x[5] = 0.0
    q, scale = quantize_rows(x)
    assert q.dtype == FP8_DTYPE and scale.shape == (64, 1) and scale.dtype == torch.float32
    amax = x.abs().amax(dim=1, keepdim=True)
    nonzero = amax[:, 0] > 0
    torch.testing.assert_close(scale[nonzero], amax[nonzero] / E4M3_MAX, rtol=1e-6, atol=0)
    assert (q[5].float() == 0).all() and scale[5].isfinite().all()
    # Independent rounding: nearest grid value of x / scale (float32 division, as quantize_rows).
    target = (x / scale).double().flatten()
    grid = e4m3_grid()
    nearest = grid[(target[:, None] - grid[None, :]).abs().argmin(dim=1)]
    assert torch.equal(q.double().flatten(), nearest)
    # The largest element of every nonzero row lands on the format's maximum.
    assert torch.equal(q.float().abs().amax(dim=1)[nonzero], torch.full((63,), E4M3_MAX))


def test_scaled_mm_emulation_is_the_dequantised_product():
    g = torch.Generator().manual_seed(1)
    qa, sa = quantize_rows(torch.randn(48, 64, generator=g))
    qb, sb = quantize_rows(torch.randn(32, 64, generator=g))
    ref = (qa.double() * sa.double()) @ (qb.double() * sb.double()).t()
    assert rel(scaled_mm_emulated(qa, qb, sa, sb, torch.float32), ref) < 1e-6


def test_fp8_linear_error_against_the_exact_linear():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 64, 448, generator=g)
    w = torch.randn(320, 448, generator=g) / 448**0.5
    b = torch.randn(320, generator=g)
    layer = FP8Linear.from_weight(w, b)
    out = layer(x)
    assert out.shape == (4, 64, 320) and out.dtype == torch.float32
    assert rel(out, dequantized_linear(x, layer)) < 1e-6
    # e4m3 keeps 3 mantissa bits: ~2.7% relative error per layer on Gaussian data.
    exact = x.double() @ w.double().t() + b.double()
    assert rel(out, exact) < 0.06
    torch.testing.assert_close(layer.weight, w, rtol=0.07, atol=1e-3)  # the dequantised weight


def test_fp8_matmul_off_cuda_emulates_in_the_input_dtype():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 64, generator=g).bfloat16()
    qw, sw = quantize_rows(torch.randn(32, 64, generator=g))
    out = fp8_matmul(x, qw, sw, None)
    qx, sx = quantize_rows(x)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, scaled_mm_emulated(qx, qw, sx, sw, torch.bfloat16))


def test_fp8_conv1x1_is_the_linear_over_channels():
    g = torch.Generator().manual_seed(4)
    conv = torch.nn.Conv2d(32, 48, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(48, 32, 1, 1, generator=g) / 32**0.5)
    x = torch.randn(3, 32, 5, 7, generator=g)
    layer = FP8Conv1x1.from_weight(conv.weight.flatten(1), conv.bias)
    out = layer(x)
    assert out.shape == (3, 48, 5, 7) and layer.out_channels == 48
    ref = dequantized_linear(x.permute(0, 2, 3, 1), layer).permute(0, 3, 1, 2)
    assert rel(out, ref) < 1e-6
    assert rel(out, conv(x).detach()) < 0.06


def test_convert_to_fp8_swaps_the_block_matmuls_and_stays_close():
    torch.manual_seed(0)
    model = random_model("tiny", torch.device("cpu"), torch.float32)
    inputs = make_inputs(model, (5, 4, 6), "cpu", torch.float32, 12, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(**inputs)
        assert convert_to_fp8(model) == 9 * model.config.depth
        out = model(**inputs)
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"FP8Linear", "FP8Conv1x1"} <= kinds
    attn = model.blocks[0].attn
    # Too narrow for _scaled_mm (2 heads), or outside the FP8 set (camera q/k/v): left as they were.
    assert type(attn.beta_proj) is torch.nn.Linear and type(attn.q_proj_cam) is torch.nn.Linear
    assert rel(out, ref) < 0.02 and cos(out, ref) > 0.999  # measured 5.4e-3, 0.99999


def test_parity_fixture_through_fp8():
    """The public tiny checkpoint with FP8 block matmuls vs the reference's output: 4.0e-2
    relative L2 (float32 path: 1.3e-3), cosine 0.9992 against our float32 output."""
    io = load_file(DATA / "public_tiny_io.safetensors")
    model = load_official(DATA / "public_tiny_state.safetensors")
    args = (io["latents"], io["timestep"], io["text"], io["text_mask"], io["raymap"], io["chunk_plucker"])
    with torch.no_grad():
        f32 = model(*args)
        convert_to_fp8(model)
        fp8 = model(*args)
    assert rel(fp8, io["expected"]) < 0.08
    assert cos(fp8, f32) > 0.998
