"""scripts/check_fp8_modules.py and the FP8 families it compares (`sanawm.ops.fp8`)."""

import copy
import importlib.util
from pathlib import Path

import pytest
import torch

from sanawm.benchmark import make_inputs, random_model, rel_l2
from sanawm.ops.fp8 import DEFAULT_FP8_FAMILIES, FP8_FAMILIES, FP8FrameConv, FP8Linear, convert_to_fp8

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check_fp8_modules.py"


def load_script():
    spec = importlib.util.spec_from_file_location("check_fp8_modules", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny():
    torch.manual_seed(0)
    model = random_model("tiny", torch.device("cpu"), torch.float32)
    with torch.no_grad():  # the init zeroes these; give the temporal convs something to carry
        for block in model.blocks:
            block.mlp.t_conv.weight.normal_(0, 0.05)
    return model


def test_convert_to_fp8_converts_exactly_the_families_named():
    model = tiny()
    assert convert_to_fp8(copy.deepcopy(model), tuple(FP8_FAMILIES)) == 10 * model.config.depth
    assert convert_to_fp8(model) == 8 * model.config.depth  # the default: all but the two output projections
    attn = model.blocks[0].attn
    assert type(attn.qkv) is FP8Linear and type(attn.output_gate) is FP8Linear
    assert type(attn.proj) is torch.nn.Linear and type(attn.out_proj_cam) is torch.nn.Linear
    assert type(model.blocks[0].mlp.t_conv) is FP8FrameConv
    assert convert_to_fp8(model) == 0  # already converted
    with pytest.raises(ValueError, match="unknown FP8 families"):
        convert_to_fp8(model, ("attention qkv", "gate"))
    assert set(DEFAULT_FP8_FAMILIES) == set(FP8_FAMILIES) - {"attention proj", "camera out proj"}


def test_leave_out_compares_the_family_sets_it_names():
    script = load_script()
    model = tiny()
    inputs = make_inputs(model, (3, 4, 6), "cpu", torch.float32, 12, torch.Generator().manual_seed(0))

    def run(m):
        return m(**inputs)

    every = tuple(FP8_FAMILIES)
    with torch.no_grad():
        target = run(model)
        direct = {}
        without_proj = tuple(f for f in every if f != "attention proj")
        for name, families in (("all", every), ("default (convert_to_fp8)", DEFAULT_FP8_FAMILIES),
                               ("all but attention proj", without_proj)):  # fmt: skip
            fp8 = copy.deepcopy(model)
            convert_to_fp8(fp8, families)
            direct[name] = rel_l2(run(fp8), target)
        errors = script.leave_out(model, run, target, [("attention proj",), every])
    for name, value in direct.items():
        assert errors[name] == value, name
    assert errors["all"] > 1e-3 and errors["all but attention proj"] > 1e-3  # measured 5.8e-3, 3.6e-3
    assert errors["all but " + " + ".join(every)] == 0.0  # nothing in FP8: the model itself
    assert type(model.blocks[0].attn.qkv) is torch.nn.Linear  # the model given is not converted


def test_embedded_case_feeds_the_bundled_model_its_own_camera_channels():
    script = load_script()
    model, run, target = script.embedded_case(torch.device("cpu"))
    assert model.config.plucker_channels != 48  # make_inputs follows the model's config
    with torch.no_grad():
        again = run(model)
    assert target.shape[2:] == script.EMBEDDED_LATENTS and torch.equal(again, target)
