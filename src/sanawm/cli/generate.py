"""`sanawm generate`: image + camera path (+ prompt) -> OUT.mp4 and OUT.camera.npz.

A thin layer over `sanawm.pipeline.WorldModel`. Everything is checked before any output file is
created, so a bad input leaves nothing behind. The MP4 is written progressively (in streaming
mode chunk by chunk), so an interrupted run leaves a playable partial video; the camera file
(c2w + pixel intrinsics of every planned frame) is written just before the first frames.

With `--sequence-parallel`, under `torchrun --nproc_per_node N -m sanawm generate ...`, the N
processes share every DiT forward (`sanawm.parallel.sequence`); only rank 0 writes files and
prints.
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
    p.add_argument("--keys", choices=("v1", "v2"), default="v1",
                   help="action key layout: v1 (default; j/l yaw, a/d strafe, as the first release and "
                        "diffusers 0.42) or v2 (the newer release: a/d yaw, j/l strafe, smoothed motion)")  # fmt: skip
    p.add_argument("--frames", type=int, help="number of frames (default: the whole trajectory)")
    p.add_argument("--frames-rounding", choices=("down", "nearest"), default="down",
                   help="a frame count the VAE cannot make is rounded down (default) or to the nearest "
                        "count within the trajectory (as diffusers' SanaWMPipeline does)")  # fmt: skip
    p.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    p.add_argument("--cfg", type=float, help="text guidance scale (default: the model's)")
    p.add_argument("--camera-cfg", type=float, help="camera guidance scale (default: the model's; 1 = off)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--mode", choices=("bidirectional", "streaming"), default="bidirectional",
                   help="bidirectional: whole clip at once; streaming: chunk by chunk")  # fmt: skip
    p.add_argument("--model", help="model folder or diffusers SanaWMPipeline folder (default: the embedded model)")
    p.add_argument("--camera-rms-clamp", action="store_true",
                   help="run the camera branch as diffusers / sglang do (RMS-clamped UCPE q/k/v in the GDN "
                        "blocks) instead of the reference GPU path; see docs/interop.md")  # fmt: skip
    p.add_argument("--refine", action="store_true",
                   help="refine the video with the model folder's stage-2 refiner (its refiner/ component)")  # fmt: skip
    p.add_argument("--refine-offload", action="store_true",
                   help="as --refine, with the refiner's weights kept on the CPU and streamed to the GPU "
                        "block by block (slower, for GPUs that cannot hold it)")  # fmt: skip
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--sequence-parallel", action="store_true",
                   help="spread every forward over the processes started by torchrun (one GPU each, NCCL; gloo "
                        "on the CPU); the model's heads must divide evenly over them")  # fmt: skip
    p.add_argument("--out", required=True, help="output video, OUT.mp4 (cameras go to OUT.camera.npz)")
    p.set_defaults(func=run)


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
    from sanawm.pipeline import WorldModel

    video_path, camera_path = _check_output(args.out)
    if args.keys != "v1" and args.action is None:
        raise UserInputError("--keys only applies to --action")
    refine = args.refine or args.refine_offload
    try:
        model = WorldModel.load(args.model, device=args.device, camera_rms_clamp=args.camera_rms_clamp or None,
                                refiner=refine, refiner_offload=args.refine_offload,
                                sequence_parallel=args.sequence_parallel)  # fmt: skip
        return _generate(args, model, video_path, camera_path, refine)
    finally:
        if args.sequence_parallel:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _generate(args: argparse.Namespace, model, video_path: Path, camera_path: Path, refine: bool) -> int:
    from tqdm import tqdm

    from sanawm.camera import save_camera_npz
    from sanawm.video import VideoWriter

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
        keys=args.keys,
        frames_rounding=args.frames_rounding,
    )
    if not model.is_main:  # another rank of a sequence-parallel group: compute, write nothing
        if args.mode == "streaming":
            for _ in model.stream(request=request, refine=refine):
                pass
        else:
            model.generate(request=request, refine=refine)
        return 0
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
                for frames in model.stream(request=request, progress=progress, refine=refine):
                    if writer.frames_written == 0:
                        save_camera_npz(camera_path, traj.c2w, traj.intrinsics, traj.image_size)
                    writer.write(frames)
            else:
                result = model.generate(request=request, progress=progress, refine=refine)
                save_camera_npz(camera_path, traj.c2w, traj.intrinsics, traj.image_size)
                writer.write(result.frames)
    finally:
        bar.close()
    print(f"wrote {video_path} ({request.num_frames} frames, {traj.image_size[1]}x{traj.image_size[0]}, "
          f"{model.settings.fps:g} fps)")  # fmt: skip
    print(f"wrote {camera_path} (camera of every frame)")
    return 0
