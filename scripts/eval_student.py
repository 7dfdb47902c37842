"""The distilled student against its teacher on the 32 held-out clips of `eval_embedded.py`.

Two steps, so that generation (fast on a GPU) and scoring (pose estimation, CPU) can run on
different machines, and scoring can be redone later with another pose estimator:

    # 1. generate: one .npz per model and setting, (33, 128, 128, 3) uint8 per clip
    python scripts/eval_student.py generate --label teacher --out clips/                       # bidirectional, defaults
    python scripts/eval_student.py generate --label student --model embedded-fast --out clips/ # its defaults (streaming)
    # 2. score every label found in clips/ against the ground truth (rendered again, on the CPU)
    python scripts/eval_student.py score --clips clips/ --out benchmarks/eval_student
    # longer clips: the 16 random walks of the plan, 81 frames (5 s) each
    python scripts/eval_student.py generate --label teacher --frames 81 --out long/
    python scripts/eval_student.py score --clips long/ --frames 81 --out benchmarks/eval_long

The clips, their worlds, cameras and generation seeds are exactly those of
`scripts/eval_embedded.py` (clip i: seed i); ground truth is rendered on the CPU in both steps.
Scores per label: PSNR / SSIM per second against the ground truth (frame 0, the input, is not
scored), RotErr / TransErr / CamMC of the poses that `sanawm.evaluation` estimates (OpenCV
backend by default, known intrinsics; a failed estimate counts as a static camera), and the
turn ratio: over the clips commanded to turn >= 5 degrees, the median of estimated / commanded
rotation from frame 0 at the frame where the commanded rotation peaks. The same estimator scores
every label and the ground truth alike. "repeat_first_frame" (ground-truth frame 0 shown for the
whole clip, a video that never moves) gets the image scores too: the bar a model must clear. Outputs: report.json, report.md, strip_<clip>.png (rows:
ground truth, then the labels in the order given; frames 0, F/4, F/2, 3F/4, F-1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import eval_embedded as ee  # noqa: E402  (the clips and metrics of the teacher's evaluation)

from sanawm.camera import Trajectory, default_intrinsics  # noqa: E402
from sanawm.errors import UserInputError  # noqa: E402
from sanawm.evaluation import PoseEstimationConfig, psnr, ssim  # noqa: E402
from sanawm.pipeline import WorldModel  # noqa: E402
from sanawm.worlds import render  # noqa: E402

TURNING_DEG = 5.0
REPEAT = "repeat_first_frame"


def clip_specs(frames: int) -> list[ee.ClipSpec]:
    """The clips of `frames` frames: the 32 of `eval_embedded.py` at its 33 frames; at any other
    length its 16 random walks (same worlds and walk seeds) walked for `frames` frames (the
    hand-written paths have 33)."""
    import dataclasses

    if frames == ee.CLIP_FRAMES:
        return ee.default_clips()
    if frames < 2:
        raise UserInputError(f"clips need at least 2 frames, got {frames}")
    return [dataclasses.replace(c, name=f"{c.name}_{frames}f", frames=frames)
            for c in ee.default_clips() if c.action is None]  # fmt: skip
MODES = ("default", "bidirectional", "streaming")


def ground_truth(clip: ee.Clip, size: tuple[int, int], fov_deg: float, frames: int | None = None) -> np.ndarray:
    """(F, H, W, 3) uint8 renders of a clip (the first `frames`), on the CPU (the same in both steps)."""
    frames = clip.spec.frames if frames is None else frames
    k = default_intrinsics(size, fov_deg).expand(frames, 4)
    with torch.no_grad():
        return render(clip.world, clip.c2w[:frames], k, size).numpy()


def generate(args: argparse.Namespace) -> int:
    model = WorldModel.load(args.model, device=args.device, dtype=torch.float32)  # folder or bundled name
    s = model.settings
    timesteps = tuple(args.timesteps) if args.timesteps else None
    if timesteps is not None:  # a subset of a student's timesteps (or any few-step list)
        import dataclasses

        model.settings = s = dataclasses.replace(s, timesteps=timesteps, steps=len(timesteps))
    mode = s.mode if args.mode == "default" else args.mode
    clips = clip_specs(args.frames)[: args.limit]
    size, k = model.image_size, default_intrinsics(model.image_size, s.fov_deg)
    videos, seconds = {}, 0.0
    for clip_spec in clips:
        clip = ee.resolve_clip(clip_spec, s.translation_speed, s.rotation_speed_deg)
        first = ground_truth(clip, size, s.fov_deg, frames=1)[0]
        trajectory = Trajectory(clip.c2w, k.expand(clip_spec.frames, 4), size)
        t0 = time.perf_counter()
        videos[clip_spec.name] = model.generate(first, trajectory=trajectory, steps=args.steps, seed=clip_spec.index,
                                                mode=mode).frames  # fmt: skip
        seconds += time.perf_counter() - t0
        print(f"{args.label}: {clip_spec.name} {seconds:.1f} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / f"{args.label}.npz", **videos)
    meta = {"label": args.label, "model": args.model or "embedded", "mode": mode,
            "steps": args.steps or s.steps, "timesteps": list(s.timesteps), "camera_cfg": s.camera_cfg,
            "device": str(model.device), "generate_s": seconds, "clips": len(videos), "frames": args.frames}  # fmt: skip
    (out / f"{args.label}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta))
    return 0


def _turn_ratio(rows: list[dict], label: str) -> float | None:
    ratios = [r[label]["motion"]["rotation_deg"]["estimated"] / r[label]["motion"]["rotation_deg"]["commanded"]
              for r in rows if r[label]["motion"]["rotation_deg"]["commanded"] >= TURNING_DEG]  # fmt: skip
    return float(np.median(ratios)) if ratios else None


def score(args: argparse.Namespace) -> int:
    folder = Path(args.clips)
    labels = args.labels or sorted(p.stem for p in folder.glob("*.npz"))
    if not labels:
        raise UserInputError(f"no <label>.npz clips in {folder}")
    metas = {label: json.loads((folder / f"{label}.json").read_text()) for label in labels}
    for label, meta in metas.items():
        if meta.get("frames", ee.CLIP_FRAMES) != args.frames:
            raise UserInputError(f"{label}: its clips have {meta.get('frames', ee.CLIP_FRAMES)} frames, not --frames {args.frames}")
    data = {label: np.load(folder / f"{label}.npz") for label in labels}
    names = [c.name for c in clip_specs(args.frames)]
    common = [n for n in names if all(n in d for d in data.values())]
    specs = [c for c in clip_specs(args.frames) if c.name in common]
    if not specs:
        raise UserInputError(f"no clip is in every one of {', '.join(f'{label}.npz' for label in labels)}")
    # The embedded models' cameras (all students share their teacher's); the ground truth is
    # rendered at the clips' own size (read from the first clip), which every clip must share.
    settings = WorldModel.load(None, device="cpu").settings
    size = None
    config = PoseEstimationConfig(backend=args.backend)
    jobs = ee._PoseJobs(args.workers, config)
    rows, waits, examples = [], [], {}
    strips = set(args.strip_clips or (names[:: max(1, len(names) // args.strips)][: args.strips] if args.strips else []))
    finished = False
    try:
        for spec in specs:
            videos = {label: data[label][spec.name] for label in labels}
            sizes = {video.shape[1:3] for video in videos.values()} | ({size} if size else set())
            if len(sizes) != 1:
                raise UserInputError(f"the clips come in several sizes {sorted(sizes)}: score one size at a time")
            size = sizes.pop()
            k = default_intrinsics(size, settings.fov_deg)
            clip = ee.resolve_clip(spec, settings.translation_speed, settings.rotation_speed_deg)
            truth = ground_truth(clip, size, settings.fov_deg)
            waits.append({m: jobs.submit(v, k.numpy()) for m, v in {ee.REFERENCE: truth, **videos}.items()})
            row = {"name": spec.name, "action": clip.action, "motion": clip.motion, "world_seed": clip.world_seed}
            for label, video in {**videos, REPEAT: np.repeat(truth[:1], len(truth), axis=0)}.items():
                p, q = psnr(video[1:], truth[1:]).numpy(), ssim(video[1:], truth[1:]).numpy()
                row[label] = {"psnr": float(p.mean()), "ssim": float(q.mean()),
                              "psnr_per_second": ee.per_second(p, settings.fps),
                              "ssim_per_second": ee.per_second(q, settings.fps)}  # fmt: skip
            rows.append(row)
            if spec.name in strips:
                examples[spec.name] = {ee.REFERENCE: truth, **videos}
        for spec, row, pending in zip(specs, rows, waits):
            clip = ee.resolve_clip(spec, settings.translation_speed, settings.rotation_speed_deg)
            commanded = clip.c2w.double().numpy()
            for label, wait in pending.items():
                poses, failure = wait()
                row.setdefault(label, {}).update(ee._camera_scores(poses, commanded, failure))
            print(f"{spec.name}: " + ", ".join(f"{m} {row[m]['rot_err_deg']:.2f}" for m in pending), flush=True)
        finished = True
    finally:
        jobs.close(finished)

    summary = {}
    for label in (*labels, REPEAT, ee.REFERENCE):
        entry = {}
        if label != REPEAT:  # a still video has no poses to score
            entry = {key: float(np.mean([r[label][key] for r in rows])) for key in ("rot_err_deg", "trans_err_rel", "cammc_rel")}
            entry["pose_failures"] = int(sum(r[label]["pose_failed"] for r in rows))
            entry["turn_ratio"] = _turn_ratio(rows, label)
        if label != ee.REFERENCE:
            for key in ("psnr", "ssim"):
                entry[key] = float(np.mean([r[label][key] for r in rows]))
                entry[f"{key}_per_second"] = np.mean([r[label][f"{key}_per_second"] for r in rows], axis=0).tolist()
        summary[label] = entry
    report = {"clips": len(rows), "frames": args.frames, "pose": {"backend": args.backend}, "labels": metas,
              "summary": summary, "rows": rows}  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    strip_names = []
    for name, videos in examples.items():
        path = out / f"strip_{name}.png"
        _save_strip(path, videos, [ee.REFERENCE, *labels])
        strip_names.append(path.name)
    table = summary_table(report)
    (out / "report.md").write_text(_markdown(report, table, strip_names, args))
    print(table)
    return 0


def summary_table(report: dict) -> str:
    seconds = max(len(x.get("psnr_per_second", ())) for x in report["summary"].values())
    head = ["label", "mode", "steps", "PSNR", "SSIM", *(f"PSNR s{i + 1}" for i in range(seconds)), "RotErr",
            "TransErr", "CamMC", "turn ratio", "pose fail"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, x in report["summary"].items():
        meta = report["labels"].get(label, {})
        images = ["-"] * (2 + seconds) if "psnr" not in x else [
            f"{x['psnr']:.2f}", f"{x['ssim']:.4f}", *(f"{v:.2f}" for v in x["psnr_per_second"])]  # fmt: skip
        poses = ["-"] * 5
        if "rot_err_deg" in x:
            turn = "-" if x["turn_ratio"] is None else f"{x['turn_ratio']:.2f}"
            poses = [f"{x['rot_err_deg']:.3f}", f"{x['trans_err_rel']:.4f}", f"{x['cammc_rel']:.4f}", turn,
                     f"{x['pose_failures']}/{report['clips']}"]  # fmt: skip
        lines.append("| " + " | ".join([label if meta else f"({label})", meta.get("mode", "-"),
                                         str(meta.get("steps", "-")), *images, *poses]) + " |")  # fmt: skip
    return "\n".join(lines)


def _markdown(report: dict, table: str, strips: list[str], args: argparse.Namespace) -> str:
    md = ["# Distilled student vs teacher on the 32 held-out clips", "",
          f"Clips of `scripts/eval_embedded.py` (held-out worlds, {report['frames']} frames, 128x128, clip i generated with seed i); "
          f"poses: `sanawm.evaluation` {report['pose']['backend']} backend, known intrinsics, for every video alike. "
          f"Turn ratio: median estimated / commanded rotation at the commanded peak over the clips that turn "
          f">= {TURNING_DEG:g} deg. (ground_truth): the estimator on the renders themselves.", "",
          "Generation settings per label:", ""]  # fmt: skip
    for label, meta in report["labels"].items():
        md.append(f"- **{label}**: model {meta['model']}, {meta['mode']}, {meta['steps']} steps"
                  f"{', timesteps ' + str(meta['timesteps']) if meta['timesteps'] else ''}, camera_cfg {meta['camera_cfg']},"
                  f" generated on {meta['device']} in {meta['generate_s']:.0f} s")  # fmt: skip
    md += ["", table, "", f"Re-score: `python scripts/eval_student.py score --clips {args.clips} --frames {args.frames} "
                          f"--out {args.out}`", ""]
    if strips:
        md += ["Rows: ground truth, then " + ", ".join(report["labels"]) + ".", ""]
        md += [f"![{name}]({name})" for name in strips]
    return "\n".join(md) + "\n"


def _save_strip(path: Path, videos: dict[str, np.ndarray], rows: list[str]) -> None:
    from PIL import Image

    from sanawm.video import frame_strip

    frames = len(videos[ee.REFERENCE])
    picks = np.linspace(0, frames - 1, ee.STRIP_FRAMES).round().astype(int)
    tiles = np.concatenate([videos[row][picks] for row in rows])
    image = Image.fromarray(frame_strip(tiles, columns=ee.STRIP_FRAMES))
    image.save(path, format="PNG", optimize=True)
    if path.stat().st_size > ee.MAX_STRIP_BYTES:
        image.quantize(256).save(path, format="PNG", optimize=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate the 32 clips with one model and setting")
    g.add_argument("--label", required=True, help="name of the .npz written to --out")
    g.add_argument("--model", help="model folder, 'embedded' (default) or 'embedded-fast'")
    g.add_argument("--mode", choices=MODES, default="default", help="default: the model's own mode")
    g.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    g.add_argument("--timesteps", type=float, nargs="+", help="few-step timesteps to sample at (e.g. 1000 908)")
    g.add_argument("--limit", type=int, help="only the first N clips")
    g.add_argument("--frames", type=int, default=ee.CLIP_FRAMES, help="clip length (not 33: the 16 random walks)")
    g.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    g.add_argument("--out", required=True)
    s = sub.add_parser("score", help="score every <label>.npz of --clips against the ground truth")
    s.add_argument("--clips", required=True)
    s.add_argument("--frames", type=int, default=ee.CLIP_FRAMES, help="clip length the clips were generated at")
    s.add_argument("--labels", nargs="+", help="labels to score, in strip order (default: all, sorted)")
    s.add_argument("--backend", default="opencv", help="pose estimator backend (default opencv)")
    s.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="pose estimation processes")
    s.add_argument("--strips", type=int, default=4, help="clips that get a PNG strip")
    s.add_argument("--strip-clips", nargs="+", metavar="NAME", help="these clips get the strips (default: --strips spread out)")
    s.add_argument("--out", required=True)
    args = p.parse_args(argv)
    try:
        return generate(args) if args.command == "generate" else score(args)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
