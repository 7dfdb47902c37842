"""Turn a distilled student's model folder into the bundled `embedded-fast` model.

    python scripts/ship_student.py STUDENT_DIR                       # int8 weights, its own timesteps
    python scripts/ship_student.py STUDENT_DIR --timesteps 1000 764  # ship a subset of its timesteps
    python scripts/ship_student.py STUDENT_DIR --float16 --out /tmp/fast16

Writes `src/sanawm/assets/embedded-fast` (or --out): `transformer/` with the weight matrices as
int8 + per-row scales (`sanawm.modeldir.quantize_int8`; --float16 keeps float16) and a
`model.json` whose VAE is the embedded teacher's, by the relative path `../embedded/vae` (no
second copy), with the student's settings: few-step timesteps, no guidance, streaming.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import torch

from sanawm.modeldir import load_transformer, read_model_dir, save_transformer, write_model_json

ASSETS = Path(__file__).resolve().parent.parent / "src" / "sanawm" / "assets"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("student", type=Path, help="the student's model folder (RUN/model of a distill stage)")
    p.add_argument("--out", type=Path, default=ASSETS / "embedded-fast")
    p.add_argument("--vae", default="../embedded/vae", help="VAE component path, relative to --out")
    p.add_argument("--timesteps", type=float, nargs="+", help="sampling timesteps (default: the student's)")
    p.add_argument("--float16", action="store_true", help="store float16 weights instead of int8")
    p.add_argument("--context-sigma", type=float,
                   help="noise level streamed chunks are committed at (default: the student's setting)")
    args = p.parse_args(argv)
    spec = read_model_dir(args.student)
    settings = spec.settings
    if args.timesteps:
        settings = dataclasses.replace(settings, timesteps=tuple(args.timesteps), steps=len(args.timesteps))
    settings = dataclasses.replace(settings, cfg=1.0, camera_cfg=1.0, mode="streaming")
    if args.context_sigma is not None:
        settings = dataclasses.replace(settings, context_sigma=args.context_sigma)
    args.out.mkdir(parents=True, exist_ok=True)
    if not (args.out / args.vae).is_dir():
        print(f"error: no VAE folder at {args.out / args.vae}", file=sys.stderr)
        return 2
    model = load_transformer(spec.components["transformer"], dtype=torch.float32)
    if args.float16:
        model = model.to(torch.float16)
    shutil.rmtree(args.out / "transformer", ignore_errors=True)
    save_transformer(model, args.out / "transformer", int8=not args.float16)
    write_model_json(args.out, settings, {"vae": args.vae})
    size = sum(f.stat().st_size for f in (args.out / "transformer").iterdir())
    print(json.dumps({"out": str(args.out), "transformer_bytes": size, "settings": dataclasses.asdict(settings)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
