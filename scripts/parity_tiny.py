"""Print the parity numbers of benchmarks/PARITY.md: our model on the `public_tiny` fixture
against the reference's outputs and against diffusers 0.42.1 (CPU, a few seconds).

    python scripts/parity_tiny.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from sanawm.model import load_official, save_official

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
STATE = DATA / "public_tiny_state.safetensors"


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@torch.no_grad()
def main() -> None:
    io = load_file(DATA / "public_tiny_io.safetensors")
    args = [io[k] for k in ("latents", "timestep", "text", "text_mask", "raymap", "chunk_plucker")]

    def ours(dtype=torch.float32, **overrides):
        model = load_official(STATE, dtype=dtype, **overrides)
        cast = [a.to(dtype) if a.is_floating_point() else a for a in args]
        return model(*cast).float()

    default, fp32 = ours(), ours(softmax_attn_dtype=None)
    fp64 = ours(torch.float64, softmax_attn_dtype=None)
    clamped, clamped_fp32 = ours(camera_rms_clamp=True), ours(camera_rms_clamp=True, softmax_attn_dtype=None)
    rows = [
        ("ours, float32 (default) vs expected", rel(default, io["expected"])),
        ("ours, float32, softmax fp32 vs expected_fp32", rel(fp32, io["expected_fp32"])),
        ("ours, float64, softmax fp64 vs expected_fp32", rel(fp64, io["expected_fp32"])),
        ("expected vs expected_fp32", rel(io["expected"], io["expected_fp32"])),
        ("ours (default) vs expected_bf16_kern", rel(default, io["expected_bf16_kern"])),
    ]
    try:
        from diffusers import SanaWMTransformer3DModel
    except ImportError:
        print("diffusers not installed: skipping the diffusers rows")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            save_official(load_official(STATE), Path(tmp) / "transformer", format="diffusers")
            reference = SanaWMTransformer3DModel.from_pretrained(Path(tmp) / "transformer").eval()
        out = reference(args[0], args[1], args[2], encoder_attention_mask=args[3], camera_conditions=args[4],
                        chunk_plucker=args[5], return_dict=False)[0]  # fmt: skip
        rows += [
            ("ours, camera_rms_clamp vs diffusers 0.42.1", rel(clamped, out)),
            ("ours, camera_rms_clamp, softmax fp32 vs diffusers", rel(clamped_fp32, out)),
            ("ours, default vs diffusers 0.42.1", rel(default, out)),
            ("ours, camera_rms_clamp vs expected", rel(clamped, io["expected"])),
            ("diffusers 0.42.1 vs expected", rel(out, io["expected"])),
        ]
    width = max(len(name) for name, _ in rows)
    print(f"{'comparison (relative L2)':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value:.2e}")


if __name__ == "__main__":
    main()
