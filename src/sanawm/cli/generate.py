"""`sanawm generate`: image + camera path (+ prompt) -> OUT.mp4 and OUT.camera.npz.

A thin layer over `sanawm.pipeline.WorldModel`. Everything is checked before any output file is
created, so a bad input leaves nothing behind: the inputs, that the outputs can be written (and
do not exist, unless --overwrite), and that the clip fits in memory (bidirectional) or how long
it will take (streaming runs over ten minutes say so first). The MP4 is written progressively
(in streaming mode chunk by chunk) and the camera file is rewritten after every chunk to hold
the cameras of the frames written so far, so an interrupted run leaves a playable partial
video whose camera file matches it.

With `--sequence-parallel`, under `torchrun --nproc_per_node N -m sanawm generate ...`, the N
processes share every DiT forward (`sanawm.parallel.sequence`); only rank 0 writes files and
prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sanawm.errors import UserInputError
from sanawm.model.compile import COMPILE_CHOICES
from sanawm.ops.flash import ATTENTION_KERNELS
from sanawm.outputs import check_outputs

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
    p.add_argument("--mode", choices=("bidirectional", "streaming"),
                   help="bidirectional: whole clip at once; streaming: chunk by chunk (default: the model's; "
                        "bidirectional except for few-step students such as embedded-fast)")  # fmt: skip
    p.add_argument("--model", help="model folder, diffusers SanaWMPipeline folder, or a bundled model: embedded "
                                   "(the default) or embedded-fast (its distilled 4-step streaming student)")  # fmt: skip
    p.add_argument("--camera-rms-clamp", action="store_true",
                   help="run the camera branch as diffusers / sglang do (RMS-clamped UCPE q/k/v in the GDN "
                        "blocks) instead of the reference GPU path; see docs/interop.md")  # fmt: skip
    p.add_argument("--refine", action="store_true",
                   help="refine the video with the model folder's stage-2 refiner (its refiner/ component)")  # fmt: skip
    p.add_argument("--refine-offload", action="store_true",
                   help="as --refine, with the refiner's weights kept on the CPU and streamed to the GPU "
                        "block by block (slower, for GPUs that cannot hold it)")  # fmt: skip
    p.add_argument("--window", type=_window_arg, metavar="N|full",
                   help="streaming: recent chunks of attention memory kept besides the sink (default 1: with "
                        "the first-chunk sink, SANA-WM's streaming cache; 'full': all, memory grows with the "
                        "clip)")  # fmt: skip
    p.add_argument("--sink", type=int, metavar="FRAMES",
                   help="streaming: latent frames from the start always attended to (default: the first chunk)")
    p.add_argument("--context-sigma", type=float, metavar="LEVEL",
                   help="streaming: noise level in [0, 1) each finished chunk is committed to the caches at "
                        "(default: the model's; 0, SANA-WM's, commits them clean)")  # fmt: skip
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--compile", nargs="?", const="default", choices=COMPILE_CHOICES,
                   help="regional torch.compile of the DiT's blocks (inductor; CUDA inference is what it is for; "
                        "the first step of each clip length pays the compile); '--compile tuned' also tunes each "
                        "fused kernel's launch shapes: minutes more compile, a few %% faster per step (for many "
                        "clips of one length)")  # fmt: skip
    p.add_argument("--fp8", action="store_true",
                   help="FP8 matmuls in the DiT's blocks (CUDA GPU of compute capability 8.9+, e.g. H100 / "
                        "H200 / L40; changes results slightly, see benchmarks/README.md)")  # fmt: skip
    p.add_argument("--attention", choices=ATTENTION_KERNELS, default="sdpa",
                   help="kernel of the softmax blocks' attention: sdpa (PyTorch, default), flash4 "
                        "(FlashAttention-4 at head dim 112: Hopper GPU and pip install 'sanawm[hopper]'), fp8 "
                        "(q, k, v and probabilities in FP8, a Triton kernel for sm89+) or flash3-fp8 (the same "
                        "on FlashAttention-3's kernel: Hopper and 'sanawm[hopper]'); the FP8 kernels change "
                        "results slightly, see benchmarks/README.md")  # fmt: skip
    p.add_argument("--cuda-graphs", action="store_true",
                   help="streaming: replay each chunk's denoising steps from a CUDA graph once the attention "
                        "window has filled (same frames, less launch overhead; CUDA with a bounded --window "
                        "only, ignored elsewhere)")  # fmt: skip
    p.add_argument("--sequence-parallel", action="store_true",
                   help="spread every forward over the processes started by torchrun (one GPU each, NCCL; gloo "
                        "on the CPU); the model's heads must divide evenly over them")  # fmt: skip
    p.add_argument("--out", required=True, help="output video, OUT.mp4 (cameras go to OUT.camera.npz)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.mp4 and OUT.camera.npz if they exist")
    p.set_defaults(func=run)


#: Streaming runs estimated to take longer than this print the estimate before they start.
LONG_RUN_SECONDS = 600.0


def _window_arg(text: str) -> int | str:
    if text == "full":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of chunks or 'full', got {text!r}") from None


def _check_output(out: str, overwrite: bool) -> tuple[Path, Path]:
    from sanawm.camera import camera_path_for

    video = Path(out)
    if video.suffix.lower() != DEFAULT_OUTPUT_SUFFIX:
        raise UserInputError(f"--out must name an .mp4 file, got {out!r}")
    camera = camera_path_for(video)
    check_outputs([video, camera], overwrite=overwrite)
    return video, camera


def format_duration(seconds: float) -> str:
    """A rough duration for humans: "about 40 min", "about 2.5 h", "about 300 h"."""
    if seconds < 3600:
        return f"about {max(1, round(seconds / 60))} min"
    hours = seconds / 3600
    return f"about {hours:.1f} h" if hours < 10 else f"about {round(hours)} h"


def run(args: argparse.Namespace) -> int:
    # Imports here keep `sanawm --help` fast.
    from sanawm.pipeline import WorldModel
    from sanawm.streaming import resolve_window

    video_path, camera_path = _check_output(args.out, args.overwrite)
    if args.keys != "v1" and args.action is None:
        raise UserInputError("--keys only applies to --action")
    _check_window_mode(args)  # an explicit --mode: before the model loads
    _check_fast_paths(args)
    resolve_window(args.window, args.sink, chunk_size=1)  # checked before the model loads
    refine = args.refine or args.refine_offload
    try:
        model = WorldModel.load(args.model, device=args.device, camera_rms_clamp=args.camera_rms_clamp or None,
                                refiner=refine, refiner_offload=args.refine_offload,
                                sequence_parallel=args.sequence_parallel)  # fmt: skip
        if args.mode is None:
            args.mode = model.settings.mode
            _check_window_mode(args)
        return _generate(args, model, video_path, camera_path, refine)
    finally:
        if args.sequence_parallel:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _check_window_mode(args: argparse.Namespace) -> None:
    if args.mode == "bidirectional" and (args.window is not None or args.sink is not None or args.cuda_graphs
                                         or args.context_sigma is not None):  # fmt: skip
        raise UserInputError("--window, --sink, --context-sigma and --cuda-graphs apply to --mode streaming only")


def _check_fast_paths(args: argparse.Namespace) -> None:
    """--fp8 on a device that cannot run it fails before the model loads; --cuda-graphs off
    CUDA is only noted (the stream runs eagerly)."""
    import torch

    from sanawm.device import choose_device
    from sanawm.model.compile import attention_unsupported, fp8_unsupported

    device = choose_device(args.device)
    reason = attention_unsupported(args.attention, device)
    if reason is not None:
        raise UserInputError(reason)
    if args.fp8:
        reason = fp8_unsupported(device, torch.bfloat16)  # models load in bfloat16 on CUDA
        if reason is not None:
            raise UserInputError(reason)
    if args.cuda_graphs and device.type != "cuda":
        print(f"sanawm generate: note: --cuda-graphs needs CUDA; streaming eagerly on {device}", file=sys.stderr)


def _generate(args: argparse.Namespace, model, video_path: Path, camera_path: Path, refine: bool) -> int:
    from sanawm.camera import Trajectory, save_trajectory
    from sanawm.model.compile import apply_fast_paths
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
        context_sigma=args.context_sigma,
    )
    # Every rank of a sequence-parallel group runs the check: its time estimate runs a forward,
    # whose collectives need all ranks.
    estimate = model.check_resources(request, args.mode, window=args.window, sink=args.sink)
    # After the check: its timing forward (streaming) would compile a shape the run never uses;
    # the estimate is then that of the eager model.
    apply_fast_paths(
        model.transformer, compile=args.compile is not None, fp8=args.fp8, attention=args.attention,
        tune=args.compile == "tuned",
    )  # fmt: skip
    if not model.is_main:  # another rank of a sequence-parallel group: compute, write nothing
        if args.mode == "streaming":
            for _ in model.stream(request=request, window=args.window, sink=args.sink, refine=refine,
                                  cuda_graphs=args.cuda_graphs):  # fmt: skip
                pass
        else:
            model.generate(request=request, refine=refine)
        return 0
    for note in request.notes:
        print(f"sanawm generate: note: {note}", file=sys.stderr)
    if estimate.seconds is not None and estimate.seconds > LONG_RUN_SECONDS:
        print(f"sanawm generate: note: {request.num_frames} frames will take {format_duration(estimate.seconds)} "
              f"on this machine ({estimate.basis}); Ctrl-C stops it and keeps the frames made so far",
              file=sys.stderr)  # fmt: skip

    traj = request.trajectory
    bar = _ProgressBar(f"generating {request.num_frames} frames")

    def save_cameras(count: int) -> None:
        """The camera file lists exactly the first `count` frames: those in the video."""
        save_trajectory(camera_path, Trajectory(traj.c2w[:count], traj.intrinsics[:count], traj.image_size))

    writer = VideoWriter(video_path, model.settings.fps)
    saved = 0
    try:
        with writer:
            if args.mode == "streaming":
                session = model.stream(request=request, window=args.window, sink=args.sink, progress=bar.update,
                                       refine=refine, cuda_graphs=args.cuda_graphs)  # fmt: skip
                chunks = (chunk.frames for chunk in session)
            else:
                chunks = iter([model.generate(request=request, progress=bar.update, refine=refine).frames])
            for frames in chunks:
                writer.write(frames)
                save_cameras(writer.frames_written)
                saved = writer.frames_written
    finally:
        bar.close()
        if writer.frames_written != saved:  # interrupted between the video and its cameras
            save_cameras(writer.frames_written)
    print(f"wrote {video_path} ({request.num_frames} frames, {traj.image_size[1]}x{traj.image_size[0]}, "
          f"{model.settings.fps:g} fps)")  # fmt: skip
    print(f"wrote {camera_path} (camera of every frame)")
    return 0


class _ProgressBar:
    """A tqdm bar opened at the first step, when the number of steps is known (opening it
    earlier prints an empty "0step" line)."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar = None

    def update(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.description, unit="step", file=sys.stderr)
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
