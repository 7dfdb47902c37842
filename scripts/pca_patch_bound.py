"""What a purely linear code of frame 0 reaches at the compact VAE's 8x8 compression: principal
components of 8x8 RGB patches, fitted on training data only (synthetic clips + training worlds),
kept at 16 / 32 / 64 components (= latent channels), applied to the held-out procedural frames
and the photographs of `eval_vae.py`.

    python scripts/pca_patch_bound.py

A trained VAE of the same latent size should do at least this well on frame 0; prints a table.
"""

from __future__ import annotations

import torch
from eval_vae import load_photos

from sanawm.train.data import make_source
from sanawm.train.embedded import embedded_vae_config
from sanawm.train.synthetic import synthetic_clips

PATCH = 8
FIT_IMAGES = 64  # synthetic images (plus 24 first frames of training worlds)
HELD_OUT_CLIPS = 32


def patches(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> (N * H/8 * W/8, 192) float64 in [-1, 1]."""
    x = images.double() / 127.5 - 1
    n, h, w, _ = x.shape
    return x.reshape(n, h // PATCH, PATCH, w // PATCH, PATCH, 3).permute(0, 1, 3, 2, 4, 5).reshape(-1, 3 * PATCH**2)


def first_frames(held_out: bool, count: int) -> torch.Tensor:
    cfg = embedded_vae_config()
    cfg.data.num_frames = 2  # the smallest procedural clip
    source = make_source(cfg.data, seed=0, held_out=held_out)
    return torch.cat([source.finish([source.prepare(d)], torch.device("cpu")).video[:, 0] for d in range(count)])


def main() -> int:
    fit = torch.cat([
        patches(synthetic_clips(FIT_IMAGES, 1, 128, 128, torch.Generator().manual_seed(5))[:, 0]),
        patches(first_frames(held_out=False, count=24)),
    ])  # fmt: skip
    mean = fit.mean(0)
    _, _, vt = torch.linalg.svd(fit - mean, full_matrices=False)
    photos, _ = load_photos(128)
    held_out = first_frames(held_out=True, count=HELD_OUT_CLIPS)
    names = " ".join(f"{n.split()[0]:>12}" for n in photos)
    print(f"{'components':>10} {'procedural':>11} {names} {'photo mean':>11}")
    for k in (16, 32, 64):
        basis = vt[:k]

        def db(image: torch.Tensor) -> float:
            p = patches(image[None])
            r = ((p - mean) @ basis.T @ basis + mean).clamp(-1, 1)
            return float(10 * torch.log10(4 / (r - p).square().mean()))

        photo_db = [db(im) for im in photos.values()]
        procedural = sum(db(im) for im in held_out) / len(held_out)
        cells = " ".join(f"{v:>12.2f}" for v in photo_db)
        print(f"{k:>10} {procedural:>11.2f} {cells} {sum(photo_db) / len(photo_db):>11.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
