"""How accurate is the pose estimator behind `sanawm eval`? Ground truth it must recover.

Renders the 32 clips of scripts/eval_embedded.py (held-out procedural worlds, 33 frames at the
embedded model's size, speeds and field of view), estimates their poses with the known
intrinsics, and scores them against the exact cameras: RotErr (mean and max over the clip,
after the similarity alignment of `camera_errors`) and the rotation read at the clip's peak
frame over the commanded one (clips turning at least 5 degrees). `--blur SIGMA` first blurs
every frame with a Gaussian: 1.25 px gives the embedded model's sharpness at 128x128 (the
same `sanawm.evaluation.sharpness` as its generated clips); with `--sharp-first` frame 0 stays
sharp, as an image-to-video model hands its input frame back. `--supersample S` renders with
S x S rays per pixel (anti-aliased, as a camera integrates over its pixels) instead of one: the
published figures use one, the renders the embedded model was trained on. Nothing is written.

    python scripts/eval_poses.py                        # sharp renders, OpenCV backend
    python scripts/eval_poses.py --blur 1.25            # as soft as the embedded model
    python scripts/eval_poses.py --blur 1.25 --sharp-first   # ... but for the input frame 0
    python scripts/eval_poses.py --backend colmap --limit 4
    python scripts/eval_poses.py --clips 06 27            # clips whose names start so
    python scripts/eval_poses.py --supersample 3          # anti-aliased renders
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from sanawm.camera import default_intrinsics
from sanawm.evaluation import PoseEstimationConfig, PoseEstimationError, camera_errors, estimate_poses_with_backend
from sanawm.pipeline import WorldModel
from sanawm.worlds import render

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_embedded import default_clips, peak_frame, resolve_clip, turn_from_first_deg  # noqa: E402

MIN_TURN_DEG = 5.0  # the read / commanded rotation is reported for clips turning at least this much


def score_clip(frames: np.ndarray, commanded: np.ndarray, k: np.ndarray, config: PoseEstimationConfig) -> dict:
    """RotErr mean / max and the peak rotation ratio of one clip (or its failure)."""
    try:
        estimated, backend = estimate_poses_with_backend(frames, k, config)
    except PoseEstimationError as err:
        return {"failure": str(err)}
    errors = camera_errors(estimated, commanded)
    frame = peak_frame(commanded)
    turned = turn_from_first_deg(commanded)[frame]
    ratio = turn_from_first_deg(estimated)[frame] / turned if turned >= MIN_TURN_DEG else None
    rot = errors.rot_err_deg
    return {"backend": backend, "mean": float(rot.mean()), "max": float(rot.max()), "ratio": ratio}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("opencv", "colmap", "auto"), default="opencv")
    p.add_argument("--blur", type=float, default=0.0, metavar="SIGMA", help="Gaussian blur in pixels (default none)")
    p.add_argument("--sharp-first", action="store_true", help="with --blur: leave frame 0 sharp")
    p.add_argument("--supersample", type=int, default=1, metavar="S", help="rays per pixel side (default 1)")
    p.add_argument("--limit", type=int, help="only the first N of the 32 clips")
    p.add_argument("--clips", nargs="+", metavar="PREFIX", help="only the clips whose names start with one of these")
    args = p.parse_args(argv)
    if args.blur < 0 or args.supersample < 1 or (args.limit is not None and args.limit < 1):
        print("error: --blur must be >= 0, --supersample and --limit >= 1", file=sys.stderr)
        return 2
    if args.sharp_first and args.blur == 0:
        print("error: --sharp-first needs --blur", file=sys.stderr)
        return 2
    import cv2

    model = WorldModel.load(device="cpu")  # for its size, speeds and field of view
    settings, size = model.settings, model.image_size
    k = default_intrinsics(size, settings.fov_deg)
    config = PoseEstimationConfig(backend=args.backend)
    rows = []
    specs = default_clips()[: args.limit]
    if args.clips:
        specs = [spec for spec in specs if spec.name.startswith(tuple(args.clips))]
        if not specs:
            print("error: --clips matches none of the clips", file=sys.stderr)
            return 2
    for spec in specs:
        clip = resolve_clip(spec, settings.translation_speed, settings.rotation_speed_deg)
        with torch.no_grad():
            frames = render(clip.world, clip.c2w, k.expand(len(clip.c2w), 4), size, supersample=args.supersample).numpy()
        if args.blur > 0:
            first = int(args.sharp_first)
            frames[first:] = np.stack([cv2.GaussianBlur(f, (0, 0), args.blur) for f in frames[first:]])
        start = time.perf_counter()
        row = {"name": spec.name, **score_clip(frames, clip.c2w.double().numpy(), k.double().numpy(), config)}
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        if "failure" in row:
            print(f"{spec.name:26s} failed: {row['failure']}", flush=True)
        else:
            ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}"
            print(f"{spec.name:26s} RotErr mean {row['mean']:.3f} max {row['max']:.3f} deg, "
                  f"rotation read {ratio} ({row['seconds']:.1f} s)", flush=True)  # fmt: skip

    done = [r for r in rows if "failure" not in r]
    means, maxes = np.array([r["mean"] for r in done]), np.array([r["max"] for r in done])
    ratios = np.array([r["ratio"] for r in done if r["ratio"] is not None])
    print(f"\n{args.backend}, blur {args.blur:g} px{' after frame 0' if args.sharp_first else ''}, supersample {args.supersample}, {size[0]}x{size[1]}: {len(rows)} clips")
    print("| clips scored | failed | RotErr mean (mean / worst) | RotErr max (worst) | mean <= 0.3 and max <= 0.8 "
          "| rotation read (range) |")
    print("|---|---|---|---|---|---|")
    within = int(((means <= 0.3) & (maxes <= 0.8)).sum())
    span = f"{ratios.min():.3f}-{ratios.max():.3f}" if len(ratios) else "-"
    worst = f"{means.mean():.3f} / {means.max():.3f}" if len(done) else "-"
    print(f"| {len(done)} | {len(rows) - len(done)} | {worst} | {maxes.max() if len(done) else float('nan'):.3f} | "
          f"{within}/{len(rows)} | {span} ({len(ratios)} clips) |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
