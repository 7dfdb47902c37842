"""Round-trip quality and CPU decode cost of compact VAEs, side by side.

    python scripts/eval_vae.py --vae v1=src/sanawm/assets/embedded/vae --vae v2=/path/to/vae2 \\
        --json benchmarks/vae2/eval.json --strip benchmarks/vae2/photos.png

For each VAE (encode -> decode, float32, on the CPU):

- procedural: `--clips` held-out clips of the embedded recipe's worlds (world seeds >= 2^31,
  never trained on; `--frames` frames at 128x128): PSNR of frame 0 (the image a world model
  starts from; by causality the same as a one-image round trip) and of all frames, averaged
  over clips;
- photographs that ship with matplotlib and scikit-image (never trained on), centre-cropped
  to a square and resized (Lanczos) to 128x128, one image each: PSNR per photo (the
  scikit-image ones are skipped, and said so, when it is not installed);
- decode cost: milliseconds per streamed chunk of 3 latent frames (12 video frames), chunk
  decoder with its state, at 1 and 2 threads (the best of `--repeat` chunks after a warm-up:
  the machine may be shared; `--timing-only` measures this alone);
- parameters of encoder and decoder, latent shape and DiT tokens of a 33-frame clip.

PSNR uses the [-1, 1] pixels, decoded values clamped, over all pixels of the image or clip.
Prints a table last.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sanawm.train.data import make_source
from sanawm.train.embedded import EMBEDDED_FRAMES, EMBEDDED_SIZE, embedded_vae_config
from sanawm.train.vae import clip_psnr
from sanawm.vae import CompactVAE, VideoVAE

CHUNK_LATENT_FRAMES = 3  # the embedded models' streaming chunk
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera")


def square_resize(image, size: int) -> torch.Tensor:
    """uint8 (H, W[, 3]) array -> (size, size, 3) uint8 tensor: centre square crop, Lanczos resize."""
    from PIL import Image

    pil = Image.fromarray(image).convert("RGB")
    side = min(pil.size)
    left, top = (pil.width - side) // 2, (pil.height - side) // 2
    pil = pil.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(pil).copy())


def load_photos(size: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """{name: (size, size, 3) uint8} and the names that could not be loaded (with why)."""
    import matplotlib.cbook
    from PIL import Image

    photos, missing = {}, []
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photos["grace_hopper (matplotlib)"] = square_resize(np.asarray(Image.open(f)), size)
    try:
        import skimage.data
    except ImportError:
        return photos, [f"{n} (scikit-image not installed)" for n in SKIMAGE_PHOTOS]
    for name in SKIMAGE_PHOTOS:
        try:
            photos[f"{name} (scikit-image)"] = square_resize(getattr(skimage.data, name)(), size)
        except Exception as err:  # a data file that needs a download: report, go on
            missing.append(f"{name} ({type(err).__name__})")
    return photos, missing


@torch.no_grad()
def round_trip(vae: CompactVAE, video: torch.Tensor) -> torch.Tensor:
    return vae.decode(vae.encode(video))


@torch.no_grad()
def decode_ms(vae: CompactVAE, threads: int, repeat: int) -> float:
    """Best ms of one streamed chunk (after the first chunk of the video, which is shorter)."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    h, w = (s // vae.spatial_stride for s in EMBEDDED_SIZE)
    decoder = vae.chunk_decoder()
    decoder.decode(torch.randn(1, vae.latent_channels, CHUNK_LATENT_FRAMES, h, w, generator=g))
    times = []
    for _ in range(repeat + 1):
        z = torch.randn(1, vae.latent_channels, CHUNK_LATENT_FRAMES, h, w, generator=g)
        t0 = time.perf_counter()
        decoder.decode(z)
        times.append(time.perf_counter() - t0)
    return 1000 * min(times[1:])


def cost(name: str, vae: CompactVAE, repeat: int) -> dict:
    h, w = (s // vae.spatial_stride for s in EMBEDDED_SIZE)
    t = vae.latent_frames(EMBEDDED_FRAMES)
    return {
        "name": name,
        "config": {"latent_channels": vae.latent_channels, "channels": list(vae.config.channels),
                   "linear_shortcut": vae.config.linear_shortcut},
        "decode_ms_per_chunk": {str(n): decode_ms(vae, n, repeat) for n in (1, 2)},
        "encoder_parameters": sum(p.numel() for p in vae.encoder.parameters()),
        "decoder_parameters": sum(p.numel() for p in vae.decoder.parameters()),
        "latent_shape_33_frames": [vae.latent_channels, t, h, w],
        "dit_tokens_33_frames": t * h * w,
    }  # fmt: skip


def quality(vae: CompactVAE, clips: torch.Tensor, photos: dict) -> dict:
    frame0, all_frames = [], []
    for clip in clips:
        video = VideoVAE.preprocess(clip[None])
        recon = round_trip(vae, video)
        frame0.append(clip_psnr(recon[0, :, :1], video[0, :, :1]))
        all_frames.append(clip_psnr(recon[0], video[0]))
    photo_db = {}
    for photo, image in photos.items():
        video = VideoVAE.preprocess(image[None, None])
        photo_db[photo] = clip_psnr(round_trip(vae, video)[0], video[0])
    return {
        "procedural_frame0_db": sum(frame0) / len(frame0),
        "procedural_all_frames_db": sum(all_frames) / len(all_frames),
        "procedural_frame0_per_clip_db": frame0,
        "photos_db": photo_db,
        "photos_mean_db": sum(photo_db.values()) / max(len(photo_db), 1),
    }


def photo_strip(photos: dict, vaes: dict[str, CompactVAE], path: Path) -> None:
    """PNG: one column per photo; rows: the input, then each VAE's round trip."""
    from PIL import Image

    rows = [torch.cat(list(photos.values()), dim=1)]
    for vae in vaes.values():
        recons = [round_trip(vae, VideoVAE.preprocess(p[None, None])) for p in photos.values()]
        rows.append(torch.cat([VideoVAE.postprocess(r)[0, 0] for r in recons], dim=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(torch.cat(rows, dim=0).numpy()).save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vae", action="append", required=True, metavar="NAME=DIR", help="a compact VAE folder (repeat)")
    p.add_argument("--clips", type=int, default=32, help="held-out procedural clips")
    p.add_argument("--frames", type=int, default=EMBEDDED_FRAMES, help="frames per procedural clip")
    p.add_argument("--repeat", type=int, default=9, help="timed chunks per thread count")
    p.add_argument("--timing-only", action="store_true", help="only decode cost, sizes and parameters")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--strip", help="write a PNG of the photos and their round trips here")
    args = p.parse_args(argv)

    vaes = {}
    for item in args.vae:
        name, _, directory = item.partition("=")
        vaes[name] = CompactVAE.load(directory).float().eval()
    height, width = EMBEDDED_SIZE
    results = [cost(name, vae, args.repeat) for name, vae in vaes.items()]
    photos, missing = {}, []
    if not args.timing_only:
        cfg = embedded_vae_config()
        cfg.data.num_frames = args.frames
        source = make_source(cfg.data, seed=0, held_out=True)
        clips = torch.cat([source.finish([source.prepare(d)], torch.device("cpu")).video for d in range(args.clips)])
        photos, missing = load_photos(height)
        for result, vae in zip(results, vaes.values()):
            result.update(quality(vae, clips, photos))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        report = {"clips": args.clips, "frames": args.frames, "size": [height, width], "photos_missing": missing,
                  "torch": torch.__version__, "vaes": results}  # fmt: skip
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.strip and photos:
        photo_strip(photos, vaes, Path(args.strip))

    names = [r["name"] for r in results]
    print(f"{'':34}" + "".join(f"{n:>12}" for n in names))
    row = lambda label, values: print(f"{label:34}" + "".join(f"{v:>12}" for v in values))  # noqa: E731
    if not args.timing_only:
        row(f"procedural frame 0 dB ({args.clips} clips)", [f"{r['procedural_frame0_db']:.2f}" for r in results])
        row(f"procedural all {args.frames} frames dB", [f"{r['procedural_all_frames_db']:.2f}" for r in results])
        for photo in photos:
            row(f"photo {photo} dB", [f"{r['photos_db'][photo]:.2f}" for r in results])
        row("photos mean dB", [f"{r['photos_mean_db']:.2f}" for r in results])
    for n in ("1", "2"):
        row(f"decode ms / chunk, {n} thread(s)", [f"{r['decode_ms_per_chunk'][n]:.1f}" for r in results])
    row("latent (C, T, h, w) of 33 frames", ["x".join(map(str, r["latent_shape_33_frames"])) for r in results])
    row("DiT tokens of 33 frames", [r["dit_tokens_33_frames"] for r in results])
    params = [f"{r['encoder_parameters'] / 1e6:.2f}/{r['decoder_parameters'] / 1e6:.2f}" for r in results]
    row("encoder / decoder params (M)", params)
    if missing:
        print("photos not loaded: " + ", ".join(missing))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
