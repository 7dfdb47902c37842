"""`sanawm traj`: make a camera trajectory from an action string, or convert a trajectory file.

    sanawm traj --action "w-40,l-20" --out walk.camera.npz [--plot walk.png]
    sanawm traj --from cameras.txt --image-size 360x640 --out cameras.json
"""

from __future__ import annotations

import argparse

from sanawm.camera import (
    DEFAULT_FOV_DEG,
    Trajectory,
    action_to_c2w,
    default_intrinsics,
    load_trajectory,
    plot_trajectory,
    save_trajectory,
)
from sanawm.errors import UserInputError
from sanawm.outputs import check_outputs

# The public SANA-WM checkpoints generate 704x1280 video.
DEFAULT_IMAGE_SIZE = (704, 1280)
_ACTION_OPTIONS = ("translation_speed", "rotation_speed", "pitch_limit", "keys")


def image_size_arg(text: str) -> tuple[int, int]:
    """Parse ``HxW`` (e.g. ``704x1280``) into ``(H, W)``."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"image size must look like 704x1280 (HxW), got {text!r}")
    height, width = int(parts[0]), int(parts[1])
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"image size must be positive, got {text!r}")
    return height, width


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``traj`` sub-command."""
    p = subparsers.add_parser(
        "traj",
        help="make or convert a camera trajectory",
        description="Roll out an action string (e.g. 'w-40,l-20': W/S forward/back, A/D left/right, "
        "I/K pitch, J/L yaw with --keys v1; A/D yaw, J/L left/right with --keys v2; 'none' to wait; "
        "keys held for N frames) or convert a trajectory file. "
        "Output format by suffix: .npz (sanawm sidecar), .npy (poses only), .json, .txt (RealEstate10K).",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--action", help="action string, e.g. 'w-40,l-20'")
    source.add_argument(
        "--from", dest="source", metavar="FILE", help="trajectory file to convert (.npz .npy .json .txt)"
    )
    p.add_argument("--out", required=True, help="output file; its suffix picks the format")
    p.add_argument("--plot", metavar="PNG", help="also save a top-down picture of the path")
    p.add_argument("--keys", choices=("v1", "v2"),
                   help="key layout: v1 (default; the first release) or v2 (the newer release, smoothed)")  # fmt: skip
    p.add_argument("--translation-speed", type=float, help="metres per frame when moving (default v1 0.05, v2 0.025)")
    p.add_argument("--rotation-speed", type=float, help="degrees per frame when turning (default v1 1.2, v2 0.6)")
    p.add_argument("--pitch-limit", type=float, help="largest pitch in degrees (default v1 85, v2 60)")
    p.add_argument(
        "--image-size",
        type=image_size_arg,
        help="HxW the intrinsics refer to (default 704x1280 for --action; for --from, needed only "
        "when the file does not say)",
    )
    p.add_argument(
        "--fov",
        type=float,
        help=f"horizontal field of view in degrees for missing intrinsics (default {DEFAULT_FOV_DEG:g})",
    )
    p.add_argument(
        "--opengl", action="store_true", help="the --from file uses OpenGL camera axes (y up, looking down -z)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out and --plot files that exist")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build or read the trajectory, write it (and the plot), print one summary line."""
    fov = DEFAULT_FOV_DEG if args.fov is None else args.fov
    if args.action is not None:
        if args.opengl:
            raise UserInputError("--opengl only applies to --from files")
        size = args.image_size or DEFAULT_IMAGE_SIZE
        c2w = action_to_c2w(args.action, args.translation_speed, args.rotation_speed, args.pitch_limit,
                            keys=args.keys or "v1")  # fmt: skip
        trajectory = Trajectory(c2w, default_intrinsics(size, fov), size)
        title = f"action {args.action}"
    else:
        given = [f"--{n.replace('_', '-')}" for n in _ACTION_OPTIONS if getattr(args, n) is not None]
        if given:
            raise UserInputError(f"{', '.join(given)} only apply to --action")
        trajectory = load_trajectory(args.source, image_size=args.image_size, fov_deg=fov, opengl=args.opengl)
        title = f"from {args.source}"
    check_outputs([args.out] + ([args.plot] if args.plot else []), overwrite=args.overwrite)
    out = save_trajectory(args.out, trajectory)
    height, width = trajectory.image_size
    fx = float(trajectory.intrinsics[0, 0])
    message = f"wrote {out} ({trajectory.num_frames} frames, {height}x{width}, fx={fx:.1f} px)"
    if args.plot:
        message += f" and {plot_trajectory(trajectory, args.plot, title=title)}"
    print(message)
    return 0
