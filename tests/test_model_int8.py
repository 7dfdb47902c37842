"""Int8 transformer weights (per-output-row scales, dequantised at load) and model folders that
share a component with another folder through a relative path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _tiny_models import make_text_free_model_dir, tiny_transformer

from sanawm.errors import UserInputError
from sanawm.modeldir import (
    INT8_SCALE,
    WEIGHTS,
    dequantize_int8,
    load_transformer,
    quantize_int8,
    read_model_dir,
    save_transformer,
)


def test_quantize_matches_a_float64_reference_per_row():
    g = torch.Generator().manual_seed(0)
    state = {
        "linear.weight": torch.randn(6, 5, generator=g) * torch.logspace(-3, 1, 6)[:, None],  # rows of very different size
        "conv.weight": torch.randn(4, 3, 1, 2, 2, generator=g),
        "norm.bias": torch.randn(7, generator=g),
        "steps": torch.arange(3),
    }
    q = quantize_int8(state)
    for name in ("linear.weight", "conv.weight"):
        w = state[name].double().numpy().reshape(state[name].shape[0], -1)
        scale = np.abs(w).max(axis=1) / 127.0
        expected = np.clip(np.round(w / scale[:, None]), -127, 127)
        assert q[name].dtype == torch.int8 and q[name].shape == state[name].shape
        np.testing.assert_array_equal(q[name].reshape(len(w), -1).numpy(), expected)
        np.testing.assert_allclose(q[name + INT8_SCALE].numpy(), scale, rtol=1e-6)
        restored = dequantize_int8(q)[name].double().numpy().reshape(len(w), -1)
        # every weight within half a step of its row (plus float32 rounding of the scale)
        assert (np.abs(restored - w) <= 0.5 * scale[:, None] * (1 + 1e-5)).all()
    assert q["norm.bias"].dtype == torch.float16
    assert torch.equal(q["steps"], state["steps"])
    restored = dequantize_int8(q)
    assert set(restored) == set(state)
    assert restored["norm.bias"].dtype == torch.float16  # loaded in the model's dtype later


def test_a_state_without_int8_weights_is_returned_unchanged():
    state = {"w": torch.ones(2, 2)}
    assert dequantize_int8(state) is state


def test_int8_weights_need_int8_values_and_a_scale_per_row():
    bad = {"w": torch.ones(3, 2), "w" + INT8_SCALE: torch.ones(3)}
    with pytest.raises(UserInputError, match="int8"):
        dequantize_int8(bad)


def test_int8_transformer_folder_loads_close_to_the_float_model(tmp_path):
    model = tiny_transformer(4, 24, 16, 4)
    save_transformer(model, tmp_path / "float")
    save_transformer(model, tmp_path / "int8", int8=True)
    fp32_bytes = (tmp_path / "float" / WEIGHTS).stat().st_size
    int8_bytes = (tmp_path / "int8" / WEIGHTS).stat().st_size
    assert int8_bytes < 0.35 * fp32_bytes  # ~1/4 of float32 (measured 0.26) plus scales and small tensors
    loaded = load_transformer(tmp_path / "int8")
    reference = quantize_int8(model.state_dict())
    expected = dequantize_int8(reference)
    for name, value in loaded.state_dict().items():
        torch.testing.assert_close(value, expected[name].float(), rtol=0, atol=0)

    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 4, 3, 4, 6, generator=g)
    timestep = torch.full((1, 3), 500.0)
    text = model.null_text()
    raymap = torch.randn(1, 3, 20, generator=g)
    plucker = torch.randn(1, 24, 3, 4, 6, generator=g)
    with torch.no_grad():
        want = model(latents, timestep, text.states, text.mask, raymap, plucker)
        got = loaded(latents, timestep, text.states, text.mask, raymap, plucker)
    error = (got - want).norm() / want.norm()
    assert error < 0.02, error  # measured 0.0072: int8 rounding of every weight matrix


def test_a_component_may_live_in_another_model_folder(tmp_path):
    teacher = make_text_free_model_dir(tmp_path / "teacher")
    student = tmp_path / "student"
    save_transformer(tiny_transformer(4, 24, 16, 4, seed=3), student / "transformer", int8=True)
    doc = json.loads((teacher / "model.json").read_text())
    doc["components"]["vae"] = "../teacher/vae"
    (student / "model.json").write_text(json.dumps(doc))
    spec = read_model_dir(student)
    assert spec.components["vae"].resolve() == (teacher / "vae").resolve()
    from sanawm.pipeline import WorldModel

    wm = WorldModel.load(student, device="cpu")
    assert wm.generate(action="w-4", steps=1).frames.shape == (5, 32, 48, 3)
