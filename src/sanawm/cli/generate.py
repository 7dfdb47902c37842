"""`sanawm generate`: image + camera path (+ prompt) -> OUT.mp4 and OUT.camera.npz.

A thin layer over `sanawm.pipeline.WorldModel`. Everything is checked before any output file is
created, so a bad input leaves nothing behind. The MP4 is written progressively (in streaming
mode chunk by chunk), so an interrupted run leaves a playable partial video; the camera file
(c2w + pixel intrinsics of every planned frame) is written just before the first frames.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sanawm.errors import UserInputError

DEFAULT_OUTPUT_SUFFIX = ".mp4"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate a video from an image and a camera trajectory",
        description="Generate a video that starts at an image and follows a camera trajectory.",
    )
    p.add_argument("--image", help="input image (default: the bundled example image)")
    path = p.add_mutually_exclusive_group(required=True)
    path.add_argument("--action", help='camera action string, e.g. "w-40,l-20" (keys wasdijkl or none, -frames)')
    path.add_argument("--trajectory", help="camera trajectory file (.npz, .npy, .json or RealEstate10K .txt)")
    p.add_argument("--prompt", help="text prompt (models with a text encoder only)")
    p.add_argument("--frames", type=int, help="number of frames (default: the whole trajectory)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    p.add_argument("--cfg", type=float, help="text guidance scale (default: the model's)")
    p.add_argument("--camera-cfg", type=float, help="camera guidance scale (default: the model's; 1 = off)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--mode", choices=("bidirectional", "streaming"), default="bidirectional",
                   help="bidirectional: whole clip at once; streaming: chunk by chunk")  # fmt: skip
    p.add_argument("--window", type=_window_arg, metavar="N|full",
                   help="streaming: recent chunks of attention memory kept besides the sink (default 1: with the "
                        "first-chunk sink, SANA-WM's streaming cache; 'full': all, memory grows with the clip)")  # fmt: skip
    p.add_argument("--sink", type=int, metavar="FRAMES",
                   help="streaming: latent frames from the start always attended to (default: the first chunk)")
    p.add_argument("--model", help="model folder (default: the embedded model)")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--out", required=True, help="output video, OUT.mp4 (cameras go to OUT.camera.npz)")
    p.set_defaults(func=run)


def _window_arg(text: str) -> int | str:
    if text == "full":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of chunks or 'full', got {text!r}") from None


def camera_path_for(video: Path) -> Path:
    """NAME.camera.npz next to NAME.mp4."""
    return video.with_name(video.stem + ".camera.npz")


def _check_output(out: str) -> tuple[Path, Path]:
    video = Path(out)
    if video.suffix.lower() != DEFAULT_OUTPUT_SUFFIX:
        raise UserInputError(f"--out must name an .mp4 file, got {out!r}")
    if not video.parent.is_dir():
        raise UserInputError(f"output folder does not exist: {video.parent}")
    if video.is_dir():
        raise UserInputError(f"--out is a folder: {video}")
    return video, camera_path_for(video)


def run(args: argparse.Namespace) -> int:
    # Imports here keep `sanawm --help` fast.
    from tqdm import tqdm

    from sanawm.camera import save_camera_npz
    from sanawm.pipeline import WorldModel
    from sanawm.streaming import resolve_window
    from sanawm.video import VideoWriter

    video_path, camera_path = _check_output(args.out)
    if args.mode != "streaming" and (args.window is not None or args.sink is not None):
        raise UserInputError("--window and --sink apply to --mode streaming only")
    resolve_window(args.window, args.sink, chunk_size=1)  # checked before the model loads
    model = WorldModel.load(args.model, device=args.device)
    request = model.prepare(
        args.image,
        trajectory=args.trajectory,
        action=args.action,
        prompt=args.prompt,
        frames=args.frames,
        steps=args.steps,
        cfg=args.cfg,
        camera_cfg=args.camera_cfg,
        seed=args.seed,
    )
    for note in request.notes:
        print(f"sanawm generate: note: {note}", file=sys.stderr)

    bar = tqdm(total=None, desc=f"generating {request.num_frames} frames", unit="step", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    traj = request.trajectory
    try:
        with VideoWriter(video_path, model.settings.fps) as writer:
            if args.mode == "streaming":
                session = model.stream(request=request, window=args.window, sink=args.sink, progress=progress)
                for chunk in session:
                    if writer.frames_written == 0:
                        save_camera_npz(camera_path, traj.c2w, traj.intrinsics, traj.image_size)
                    writer.write(chunk.frames)
            else:
                result = model.generate(request=request, progress=progress)
                save_camera_npz(camera_path, traj.c2w, traj.intrinsics, traj.image_size)
                writer.write(result.frames)
    finally:
        bar.close()
    print(f"wrote {video_path} ({request.num_frames} frames, {traj.image_size[1]}x{traj.image_size[0]}, "
          f"{model.settings.fps:g} fps)")  # fmt: skip
    print(f"wrote {camera_path} (camera of every frame)")
    return 0
