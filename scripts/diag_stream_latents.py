"""How far a streamed clip's latents leave the range of real ones, chunk by chunk.

Streams a model on the loop of `eval_long_horizon.py` (same world, same trajectory, ground
truth's frame 0 as input) and prints, for every chunk, the RMS of each latent channel over the
chunk beside the same RMS of real clips: held-out procedural clips encoded by the model's VAE,
cut into the chunks a stream makes (frame 0 alone, then 3 latent frames). A stream that feeds
its own output back grows the RMS of some channels chunk after chunk when it is unstable, long
before its frames turn to noise; a stable one stays within the real range.

    python scripts/diag_stream_latents.py --frames 161 --steps 8 --window 4 [--model DIR] [--camera-cfg 1]
        [--context-sigma 0]

CPU, 2 threads: about 2 minutes for 161 frames of the embedded model at 8 steps, plus 3 minutes
for the real clips' range (48 clips; `--real-clips`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_long_horizon as lh  # noqa: E402  (the loop and world of the long-horizon evaluation)

from sanawm.camera import Trajectory, default_intrinsics  # noqa: E402
from sanawm.evaluation.image_metrics import psnr  # noqa: E402
from sanawm.pipeline import WorldModel  # noqa: E402
from sanawm.sampling.sampler import ChunkSampler  # noqa: E402
from sanawm.train.config import ProceduralConfig  # noqa: E402
from sanawm.train.data import ProceduralClips  # noqa: E402
from sanawm.worlds import make_world, render  # noqa: E402


def chunk_rms(latents: torch.Tensor) -> np.ndarray:
    """(1, C, t, h, w) -> (C,) RMS of each channel."""
    return latents[0].float().pow(2).mean(dim=(1, 2, 3)).sqrt().numpy()


def real_range(wm: WorldModel, clips: int, chunk: int) -> np.ndarray:
    """(n, C) RMS per channel of the chunks of held-out procedural clips (33 frames)."""
    source = ProceduralClips(ProceduralConfig(), 33, wm.image_size, seed=123, held_out=True)
    rows = []
    with torch.no_grad():
        for d in range(clips):
            video = source.finish([source.prepare(d)], torch.device("cpu")).video
            z = wm.vae.encode(wm.vae.preprocess(video))
            rows.append(chunk_rms(z[:, :, :1]))
            rows += [chunk_rms(z[:, :, s : s + chunk]) for s in range(1, z.shape[2], chunk)]
    return np.stack(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model folder or bundled name (default: the embedded model)")
    p.add_argument("--frames", type=int, default=161)
    p.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    p.add_argument("--window", default="4", help="'full' or chunks (default 4)")
    p.add_argument("--camera-cfg", type=float, help="camera guidance (default: the model's)")
    p.add_argument("--context-sigma", type=float, help="noise level of committed chunks (default: the model's)")
    p.add_argument("--real-clips", type=int, default=48, help="held-out clips for the real range (0: skip)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    wm = WorldModel.load(args.model)
    world = make_world(lh.WORLD_SEED, lh.WORLD_KIND)
    c2w = lh.make_trajectory("loop", world, args.frames)
    k = default_intrinsics(wm.image_size, wm.settings.fov_deg).expand(len(c2w), 4)
    truth = render(world, c2w, k, wm.image_size).numpy()

    rms: list[tuple[int, np.ndarray]] = []
    session = wm.stream(
        truth[0], trajectory=Trajectory(c2w, k, wm.image_size), steps=args.steps, seed=0,
        window="full" if args.window == "full" else int(args.window),
        **({} if args.camera_cfg is None else {"camera_cfg": args.camera_cfg}),
        **({} if args.context_sigma is None else {"context_sigma": args.context_sigma}),
    )  # fmt: skip
    sample = session._sampler.sample  # the chunk's clean latents, before they are decoded

    def recording(start: int, stop: int, camera) -> torch.Tensor:
        latents = sample(start, stop, camera)
        rms.append((start, chunk_rms(latents)))
        return latents

    session._sampler.sample = recording
    frame_psnr = []
    for chunk in session:
        frame_psnr.append((chunk.start, float(psnr(chunk.frames, truth[chunk.start : chunk.start + len(chunk.frames)]).mean())))

    top = 6  # the channels that hold most of the variance of a PCA-started code; the rest averaged
    real = real_range(wm, args.real_clips, wm.settings.chunk_size) if args.real_clips else None
    if real is not None:
        hi = real.max(axis=0)
        print(f"real chunks ({len(real)}): median RMS ch0-{top - 1} {np.round(np.median(real, axis=0)[:top], 2)}, "
              f"max {np.round(hi[:top], 2)}, max over ch{top}+ {hi[top:].max():.2f}")  # fmt: skip
    print("| latent frame | frames' PSNR | RMS ch0-5 | mean RMS ch6+ | channels above the real max |")
    print("|---|---|---|---|---|")
    for (start, r), (_, db) in zip(rms, frame_psnr):
        above = "-" if real is None else str(int((r > real.max(axis=0)).sum()))
        print(f"| {start} | {db:.2f} | {' '.join(f'{x:.2f}' for x in r[:top])} | {r[top:].mean():.3f} | {above} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
