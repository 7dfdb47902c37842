"""`sanawm eval`: score a video against the camera path it was asked to follow.

    sanawm eval --video out.mp4 --trajectory out.camera.npz --json scores.json [--plot scores.png]
    sanawm eval --video out.mp4 --trajectory gt.camera.npz --reference gt.mp4 --json scores.json

Prints a table and writes a JSON report (see `sanawm.evaluation.report`): SANA-WM's camera
errors RotErr / TransErr / CamMC with per-frame values, PSNR / SSIM against a reference video
when one is given, revisit consistency when the path returns to earlier views, and the
first-vs-last-window degradation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sanawm.errors import UserInputError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` sub-command."""
    p = subparsers.add_parser(
        "eval",
        help="score a video: camera following, revisit consistency, degradation",
        description="Estimate the camera poses of a video (an OpenCV structure-from-motion, or "
        "COLMAP's global one through pycolmap), align them to the commanded trajectory and report "
        "SANA-WM's RotErr / TransErr / CamMC; with --reference also PSNR / SSIM per frame.",
    )
    p.add_argument("--video", required=True, help="the generated video")
    p.add_argument("--trajectory", required=True, help="the commanded camera path (.camera.npz, .json, .npy, .txt)")
    p.add_argument("--reference", metavar="VIDEO", help="ground-truth video of the same path (e.g. a procedural render)")
    p.add_argument("--json", required=True, metavar="OUT", help="where to write the report")
    p.add_argument("--plot", metavar="PNG", help="also draw paths, per-frame errors and quality over time")
    p.add_argument("--stride", type=int, default=4, help="estimate poses on every N-th frame (default 4, as SANA-WM)")
    p.add_argument(
        "--pose-backend", choices=("auto", "colmap", "opencv"), default="auto",
        help="auto: OpenCV, the more accurate on rendered clips, and COLMAP if OpenCV fails and pycolmap is installed",
    )
    p.add_argument("--fps", type=float, help="frame rate (default: read from the video)")
    p.add_argument("--window", type=float, default=10.0, metavar="SEC", help="degradation window (default 10 s)")
    p.add_argument("--fov", type=float, help="horizontal field of view (degrees) if the trajectory has no intrinsics")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Read the inputs, evaluate, print the table and write the report (and plot)."""
    from sanawm.camera import load_trajectory_at
    from sanawm.evaluation import EvalConfig, PoseEstimationConfig, evaluate_video, format_table, plot_report
    from sanawm.video import read_video

    config = EvalConfig(pose_stride=args.stride, pose=PoseEstimationConfig(backend=args.pose_backend), window_sec=args.window)
    frames, video_fps = read_video(args.video)
    fps = args.fps if args.fps is not None else video_fps
    if not fps > 0:
        raise UserInputError(f"{args.video} does not state its frame rate; pass --fps")
    video_hw = (int(frames.shape[1]), int(frames.shape[2]))
    fov = {} if args.fov is None else {"fov_deg": args.fov}
    trajectory = load_trajectory_at(args.trajectory, video_hw, **fov)  # a file without a size: the video's
    reference = None
    if args.reference:
        reference, _ = read_video(args.reference)
        if len(reference) != len(frames):  # before the pose estimation, which takes a while
            raise UserInputError(
                f"--reference {args.reference} has {len(reference)} frames but --video {args.video} has "
                f"{len(frames)}; the reference must show the same camera path, frame for frame"
            )

    report = evaluate_video(
        frames,
        trajectory.c2w.double().numpy(),
        trajectory.intrinsics.double().numpy(),
        fps,
        reference=reference,
        config=config,
    )
    report = {"video": str(args.video), "trajectory": str(args.trajectory), **report}
    if reference is not None:
        report["reference"]["video"] = str(args.reference)
    out = Path(args.json)
    out.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    print(format_table(report))
    message = f"wrote {out}"
    if args.plot:
        message += f" and {plot_report(report, args.plot)}"
    print(message)
    return 0
