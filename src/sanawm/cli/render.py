"""`sanawm render`: ground-truth video of a procedural world along a camera path.

    sanawm render --world-seed 3 --action "w-40,l-20" --size 128x128 --out gt.mp4
    sanawm render --world-seed 3 --trajectory walk.camera.npz --frames 81 --size 352x640 --out gt.mp4
    sanawm render --world-seed 3 --random walk --trajectory-seed 7 --frames 121 --size 128x128 --out gt.mp4
    sanawm render --world-seed 3 --random walk --frames 33 --size 128x128 --out gt.mp4 --first-frame start.png

Writes the video (H.264, written progressively) and ``NAME.camera.npz`` next to it (``gt.mp4``
-> ``gt.camera.npz``): the exact poses and intrinsics of every frame. ``--first-frame`` also
saves frame 0 as a PNG: the input image for `sanawm generate` along the same path. Frames are
anti-aliased (3 x 3 rays per pixel, ``--supersample``), as a camera sees: pose estimators meet
their bounds on such renders (benchmarks/README.md, "The pose estimator on ground truth").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from sanawm.camera import (
    DEFAULT_FOV_DEG,
    Trajectory,
    action_to_c2w,
    camera_path_for,
    default_intrinsics,
    load_trajectory_at,
    save_trajectory,
)
from sanawm.cli.traj import image_size_arg
from sanawm.device import choose_device
from sanawm.errors import UserInputError
from sanawm.outputs import check_outputs
from sanawm.video import VideoWriter
from sanawm.worlds import KINDS, make_world, render
from sanawm.worlds.trajectories import (
    DEFAULT_MARGIN,
    loop_trajectory,
    random_action_walk,
    random_spline_trajectory,
    trajectory_clearance,
)

_RANDOM = {"walk": None, "spline": random_spline_trajectory, "loop": loop_trajectory}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``render`` sub-command."""
    p = subparsers.add_parser(
        "render",
        help="render a procedural world along a camera path (ground-truth video + cameras)",
        description="Render a seeded procedural world (room, corridor, street or terrain) along an "
        "action string, a trajectory file or a generated path; writes NAME.mp4 and NAME.camera.npz.",
    )
    p.add_argument("--world-seed", type=int, required=True, help="seed of the world (non-negative)")
    p.add_argument("--world-kind", choices=KINDS, help="kind of world (default: chosen by the seed)")
    path = p.add_mutually_exclusive_group(required=True)
    path.add_argument("--action", help="action string, e.g. 'w-40,l-20' (starts at the origin)")
    path.add_argument("--trajectory", metavar="FILE", help="camera file (.npz .npy .json .txt, see `sanawm traj`)")
    path.add_argument("--random", choices=sorted(_RANDOM), help="generate a free-space path of --frames frames")
    p.add_argument("--trajectory-seed", type=int, default=0, help="seed of the --random path (default 0)")
    p.add_argument("--frames", type=int, help="frames to render (required with --random; otherwise the first N poses)")
    p.add_argument("--size", type=image_size_arg, required=True, help="HxW of the video, both even (e.g. 128x128)")
    p.add_argument("--out", required=True, help="output video, NAME.mp4")
    p.add_argument("--first-frame", metavar="PNG", help="also save frame 0 as an image (an input for `sanawm generate`)")
    p.add_argument("--overwrite", action="store_true", help="replace the output files if they exist")
    p.add_argument("--fps", type=float, default=16.0, help="frames per second of the video (default 16)")
    p.add_argument("--fov", type=float, default=DEFAULT_FOV_DEG,
                   help=f"horizontal field of view in degrees when the path has no intrinsics (default {DEFAULT_FOV_DEG:g})")
    p.add_argument("--supersample", type=int, default=3,
                   help="anti-aliasing: trace s x s rays per pixel and average them, as a camera's pixel integrates "
                        "over its area (default 3; 1 traces 9x fewer rays, ~4x faster end to end on small clips, but "
                        "fine texture then aliases and poses read from the video are less exact)")
    p.add_argument("--batch", type=int, default=16, help="frames rendered (and written) per step (default 16)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.set_defaults(func=run)


def _camera_path(args: argparse.Namespace, world, size: tuple[int, int]) -> Trajectory:
    """The poses and intrinsics to render, at the video size."""
    if args.action is not None:
        return Trajectory(action_to_c2w(args.action), default_intrinsics(size, args.fov), size)
    if args.random is not None:
        if args.frames is None:
            raise UserInputError("--random needs --frames (how many frames to generate)")
        if args.random == "walk":
            _, c2w = random_action_walk(world, args.frames, args.trajectory_seed)
        else:
            c2w = _RANDOM[args.random](world, args.frames, args.trajectory_seed)
        return Trajectory(c2w, default_intrinsics(size, args.fov), size)
    return load_trajectory_at(args.trajectory, size, fov_deg=args.fov)


def run(args: argparse.Namespace) -> int:
    """Render the video and write the camera sidecar; print one summary line."""
    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise UserInputError(f"--out must name an .mp4 file, got {out}")
    height, width = args.size
    if height % 2 or width % 2:
        raise UserInputError(f"--size must have an even height and width for H.264, got {height}x{width}")
    if args.frames is not None and args.frames < 1:
        raise UserInputError(f"--frames must be positive, got {args.frames}")
    if args.batch < 1:
        raise UserInputError(f"--batch must be positive, got {args.batch}")
    if args.supersample < 1:
        raise UserInputError(f"--supersample must be positive, got {args.supersample}")
    if args.random is None and args.trajectory_seed != 0:
        raise UserInputError("--trajectory-seed only applies to --random")
    device = choose_device(args.device)
    if args.first_frame is not None and Path(args.first_frame).suffix.lower() != ".png":
        raise UserInputError(f"--first-frame must name a .png file, got {args.first_frame}")
    camera_file = camera_path_for(out)
    check_outputs([out, camera_file] + ([args.first_frame] if args.first_frame else []), overwrite=args.overwrite)

    world = make_world(args.world_seed, args.world_kind)
    trajectory = _camera_path(args, world, (height, width))
    if args.frames is not None:
        if args.frames > trajectory.num_frames:
            raise UserInputError(f"--frames {args.frames} is more than the {trajectory.num_frames} poses of the path")
        trajectory = Trajectory(trajectory.c2w[: args.frames], trajectory.intrinsics[: args.frames], (height, width))

    clearance = trajectory_clearance(world, trajectory.c2w)
    if clearance < DEFAULT_MARGIN:
        where = "inside geometry" if clearance < 0 else f"{clearance:.2f} m from a surface"
        print(f"sanawm render: warning: the camera passes {where}; frames there show surfaces up close or from inside",
              file=sys.stderr)

    world = world.to(device)
    c2w, intrinsics = trajectory.c2w.to(device), trajectory.intrinsics.to(device)
    writer = VideoWriter(out, args.fps, size=(height, width))
    try:
        with writer:
            for start in range(0, trajectory.num_frames, args.batch):
                stop = start + args.batch
                frames = render(world, c2w[start:stop], intrinsics[start:stop], (height, width),
                                supersample=args.supersample)
                writer.write(frames)
                if start == 0 and args.first_frame is not None:
                    Image.fromarray(frames[0].cpu().numpy()).save(args.first_frame)
    finally:  # also when interrupted: the camera file lists the frames in the video
        done = writer.frames_written
        if done:
            save_trajectory(camera_file, Trajectory(trajectory.c2w[:done], trajectory.intrinsics[:done], (height, width)))
    extra = f" and {args.first_frame}" if args.first_frame else ""
    print(f"wrote {out} ({trajectory.num_frames} frames, {height}x{width}, {world.summary()}), {camera_file}{extra}")
    return 0
