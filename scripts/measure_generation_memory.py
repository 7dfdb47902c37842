"""Measure the peak memory of a bidirectional run of the embedded model on the CPU, per phase,
to calibrate `sanawm.resources` (the pre-flight check of `sanawm generate`).

    python scripts/measure_generation_memory.py --frames 17 33 65 129

Every measurement runs in a fresh process and reads its peak resident memory (`ru_maxrss`):
`load` (the model loaded, nothing run), `sample` (loading + one sampling step of the whole clip
with the shipped guidance), `decode` (loading + decoding random latents of the clip). The
per-token and per-pixel costs are least-squares slopes over the frame counts, divided by the
DiT's width x 4 bytes (float32) and by 4 bytes; prints a table and the fitted constants last.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np

CHILD = r"""
import json, resource, sys, torch
from sanawm.pipeline import WorldModel
phase, frames = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
wm = WorldModel.load(device="cpu")
request = wm.prepare(action=f"w-{frames - 1}", steps=1)
if phase == "sample":
    from sanawm.sampling.sampler import sample_bidirectional
    sample_bidirectional(wm.transformer, wm._conditioning(request), request.sampler)
elif phase == "decode":
    t, h, w = (frames - 1) // wm.vae.temporal_stride + 1, wm.settings.height // wm.vae.spatial_stride, wm.settings.width // wm.vae.spatial_stride
    with torch.no_grad():
        wm.vae.decode(torch.randn(1, wm.vae.latent_channels, t, h, w))
print(json.dumps({"peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "tokens": wm.clip_shape(request).tokens, "hidden": wm.transformer.config.hidden_size,
                  "pixels": frames * wm.settings.height * wm.settings.width}))
"""


def measure(phase: str, frames: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, phase, str(frames)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[17, 33, 65, 129])
    args = parser.parse_args()
    rows = []
    for frames in args.frames:
        row = {"frames": frames, **{phase: measure(phase, frames) for phase in ("load", "sample", "decode")}}
        rows.append(row)
    print(f"{'frames':>7} {'tokens':>7} {'load MB':>8} {'sample MB':>10} {'decode MB':>10}")
    for r in rows:
        print(f"{r['frames']:>7} {r['sample']['tokens']:>7} {r['load']['peak_bytes'] / 1e6:>8.0f} "
              f"{r['sample']['peak_bytes'] / 1e6:>10.0f} {r['decode']['peak_bytes'] / 1e6:>10.0f}")
    tokens = np.array([r["sample"]["tokens"] for r in rows], dtype=float)
    pixels = np.array([r["decode"]["pixels"] for r in rows], dtype=float)
    sample = np.array([r["sample"]["peak_bytes"] for r in rows], dtype=float)
    decode = np.array([r["decode"]["peak_bytes"] for r in rows], dtype=float)
    per_token = np.polyfit(tokens, sample, 1)[0]
    per_pixel = np.polyfit(pixels, decode, 1)[0]
    hidden = rows[0]["sample"]["hidden"]
    print(f"DiT: {per_token:.0f} bytes per token = {per_token / (hidden * 4):.1f} x width x 4 bytes; "
          f"VAE decode: {per_pixel:.0f} bytes per output pixel = {per_pixel / 4:.1f} x 4 bytes")


if __name__ == "__main__":
    main()
