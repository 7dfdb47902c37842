"""What the fused GDN kernels' precision does to the 2.6B model's velocity (CUDA).

    python scripts/check_gdn_precision.py --frames 81 961

The same random weights and inputs (benchmark.make_inputs) run eagerly three ways: bf16 with
the GDN kernels in "ieee" precision, bf16 with "tf32" (what `gdn_precision="auto"` picks for
bf16), and float32 (the reference: fp32 activations take "ieee"). Prints, per clip length, the
relative L2 distance and cosine of each bf16 velocity to the float32 one and of tf32 to ieee,
then a table. bf16's own distance to float32 is the noise floor a fast path must stay within.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sanawm.benchmark import cosine, make_inputs, random_model, rel_l2
from sanawm.ops.gdn import use_gdn_precision


def velocities(frames: int, device: torch.device) -> dict[str, torch.Tensor]:
    size = ((frames - 1) // 8 + 1, 22, 40)
    out = {}
    torch.manual_seed(0)
    model = random_model("sanawm-2.6b", device, torch.bfloat16)
    inputs = make_inputs(model, size, device, torch.bfloat16, 300, torch.Generator().manual_seed(frames))
    with torch.inference_mode():
        for precision in ("ieee", "tf32"):
            use_gdn_precision(model, precision)
            out[precision] = model(**inputs).float().cpu()
    del model
    torch.cuda.empty_cache()
    torch.manual_seed(0)
    ref = random_model("sanawm-2.6b", device, torch.float32)  # same seed: the weights bf16 rounds
    with torch.inference_mode():
        out["float32"] = ref(**{k: (v.float() if v.is_floating_point() else v) for k, v in inputs.items()}).cpu()
    del ref
    torch.cuda.empty_cache()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[81, 961])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = torch.device("cuda")
    rows = []
    for frames in args.frames:
        v = velocities(frames, device)
        row = {"frames": frames, "gpu": torch.cuda.get_device_name(device), "torch": torch.__version__}
        for a, b in (("ieee", "float32"), ("tf32", "float32"), ("tf32", "ieee")):
            row[f"{a}_vs_{b}_rel_l2"] = rel_l2(v[a], v[b])
            row[f"{a}_vs_{b}_cos"] = cosine(v[a], v[b])
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    print(f"\n{'frames':>6} {'bf16 ieee vs f32':>17} {'bf16 tf32 vs f32':>17} {'tf32 vs ieee':>13}")
    for r in rows:
        print(f"{r['frames']:>6} {r['ieee_vs_float32_rel_l2']:>17.3e} {r['tf32_vs_float32_rel_l2']:>17.3e} "
              f"{r['tf32_vs_ieee_rel_l2']:>13.3e}")  # fmt: skip


if __name__ == "__main__":
    main()
