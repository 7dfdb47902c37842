"""Where the FP8 path's velocity error comes from: every FP8 matmul family
(`sanawm.ops.fp8.FP8_FAMILIES`) in FP8, `convert_to_fp8`'s default families, then each family
in turn left at the model's own precision.

    python scripts/check_fp8_modules.py                                  # CPU: the three small models
    python scripts/check_fp8_modules.py --models random --preset sanawm-2.6b --device cuda --frames 81 \
        --together "attention proj+camera out proj"

Models:
- "checkpoint": the public tiny checkpoint (tests/data, trained weights) on its parity inputs,
  against the reference's output;
- "embedded": the package's embedded model (trained on procedural worlds; width 192) on random
  latents, text and camera, against its own output before conversion;
- "random": `--preset` with the from-scratch init and every branch open
  (`sanawm.benchmark.open_every_branch`), against its own output before conversion.
Eager forwards with the model's softmax attention (only the linears change). On the CPU the FP8
matmuls are `scaled_mm_emulated` (the same quantisation, float32 products); on CUDA in bf16
they are `torch._scaled_mm`. Prints one table per model: relative L2 with every family in
FP8, with the default families, with each family left out, and with each `--together` group
left out.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
EMBEDDED_LATENTS = (9, 16, 16)  # the embedded model's latents of a 33-frame clip at its 128 x 128 (strides 4 x 8 x 8)


def leave_out(
    model: nn.Module, run: Callable[[nn.Module], Tensor], target: Tensor, groups: list[tuple[str, ...]]
) -> dict[str, float]:
    """Relative L2 of `run(model)` against `target` with every family of `FP8_FAMILIES` in FP8
    ("all"), with `convert_to_fp8`'s default families ("default"), and with each group of
    families left as in `model` ("all but <families>"). `model` itself is not changed."""
    from sanawm.benchmark import rel_l2
    from sanawm.ops.fp8 import DEFAULT_FP8_FAMILIES, FP8_FAMILIES, convert_to_fp8

    def error(families) -> float:
        fp8_model = copy.deepcopy(model)
        convert_to_fp8(fp8_model, families)
        return rel_l2(run(fp8_model), target)

    errors = {"all": error(tuple(FP8_FAMILIES)), "default (convert_to_fp8)": error(DEFAULT_FP8_FAMILIES)}
    for group in groups:
        errors["all but " + " + ".join(group)] = error(tuple(f for f in FP8_FAMILIES if f not in group))
    return errors


def checkpoint_case(device: torch.device) -> tuple[nn.Module, Callable[[nn.Module], Tensor], Tensor]:
    from safetensors.torch import load_file

    from sanawm.model import load_official

    io = load_file(DATA / "public_tiny_io.safetensors")
    model = load_official(DATA / "public_tiny_state.safetensors").to(device)
    args = [io[k].to(device) for k in ("latents", "timestep", "text", "text_mask", "raymap", "chunk_plucker")]
    return model, lambda m: m(*args), io["expected"].to(device)


def embedded_case(device: torch.device) -> tuple[nn.Module, Callable[[nn.Module], Tensor], Tensor]:
    from sanawm import WorldModel
    from sanawm.benchmark import make_inputs

    model = WorldModel.load(device=device, dtype=torch.float32).transformer  # the embedded default
    inputs = make_inputs(model, EMBEDDED_LATENTS, device, torch.float32, min(300, model.config.max_text_len),
                         torch.Generator().manual_seed(1234))  # fmt: skip
    with torch.no_grad():
        target = model(**inputs)
    return model, lambda m: m(**inputs), target


def random_case(preset: str, frames: int, device: torch.device) -> tuple[nn.Module, Callable[[nn.Module], Tensor], Tensor]:
    from sanawm.benchmark import latents_for_frames, make_inputs, open_every_branch, random_model

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    model = open_every_branch(random_model(preset, device, dtype))
    size = latents_for_frames(frames, 704, 1280) if preset != "tiny" else latents_for_frames(frames, 128, 192)
    inputs = make_inputs(model, size, device, dtype, min(300, model.config.max_text_len), torch.Generator().manual_seed(1234))
    with torch.no_grad():
        target = model(**inputs)
    return model, lambda m: m(**inputs), target


def main() -> None:
    from sanawm.ops.fp8 import FP8_FAMILIES, check_fp8_families

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=("checkpoint", "embedded", "random"),
                        default=["checkpoint", "embedded", "random"])
    parser.add_argument("--preset", default="tiny", help="preset of the random model (default tiny)")
    parser.add_argument("--frames", type=int, default=33, help="clip length of the random model's input")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--together", action="append", default=[], metavar="FAMILY+FAMILY",
                        help='also leave these families out together (repeatable), e.g. "attention proj+camera out proj"')
    args = parser.parse_args()
    groups = [(family,) for family in FP8_FAMILIES] + [tuple(g.split("+")) for g in args.together]
    try:
        check_fp8_families([f for g in groups for f in g])
    except ValueError as err:
        parser.error(str(err))
    device = torch.device(args.device)
    tables = []
    for name in args.models:
        if name == "checkpoint":
            model, run, target = checkpoint_case(device)
            label = "public tiny checkpoint vs the reference"
        elif name == "embedded":
            model, run, target = embedded_case(device)
            label = f"embedded model (trained), random latents {EMBEDDED_LATENTS}, vs itself"
        else:
            model, run, target = random_case(args.preset, args.frames, device)
            label = f"{args.preset} random, every branch open, {args.frames} frames, vs itself"
        with torch.inference_mode():
            errors = leave_out(model, run, target, groups)
        tables.append((label, errors))
        del model
    for label, errors in tables:
        print(f"\n{label} (velocity, relative L2)")
        for row, err in errors.items():
            print(f"  {row:<48} {err:.4f}")


if __name__ == "__main__":
    main()
