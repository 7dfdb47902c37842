"""Where does a DiT trained on another VAE start? The flow-matching loss of the starts of
`sanawm.train.dit.warm_start` before any training step, on held-out procedural clips.

Rows (same clips, noise and levels for all):
  old DiT, old latents    the committed DiT in its own latent space (what training reached there)
  mapped (orthogonal)     what `warm_start` does: blocks copied, latent layers mapped by the
                          orthonormal-row map of `fit_latent_map` (fitted on `--map-clips`)
  mapped (least squares)  the same through the plain least-squares map and its pseudo-inverse
  re-initialised          blocks copied, latent layers freshly initialised
  from scratch            the reference initialisation of the whole DiT
  zero velocity           predicting 0 (loss E|noise - data|^2, about 2 for unit-variance latents)
plus, on the scored clips, the R^2 of the old latents predicted from the new ones by the
least-squares map fitted on the map clips (how much of the old latent space the new one holds).

Each clip is scored at every level of `--sigmas` (all latent frames but frame 0 at that level,
frame 0 clean, bidirectional, camera on); the loss is the per-channel MSE, so spaces of
different widths compare.

    python scripts/check_warm_start.py --vae /work/notes/vae2/linear64/vae --map-clips 2 --clips 2   # CPU, minutes
    python scripts/check_warm_start.py --vae VAE --json warm_start.json                            # GPU: 64 + 16 clips
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from sanawm.modeldir import load_transformer, read_model_dir
from sanawm.train.data import make_source
from sanawm.train.dit import (
    _load_frozen_vae,
    dit_config,
    encode_clips,
    fit_latent_map,
    least_squares_map,
    map_latent_layers,
)
from sanawm.train.embedded import embedded_dit_config
from sanawm.train.objective import flow_matching_loss, noise_latents, text_inputs

REPO = Path(__file__).resolve().parent.parent


@torch.no_grad()
def mean_loss(model, encoded: list[dict], sigmas: list[float], seed: int) -> float:
    """Flow-matching loss averaged over the clips and levels, with noise drawn from `seed`."""
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    losses = []
    for batch in encoded:
        latents = batch["latents"]
        B, _, T = latents.shape[:3]
        text, mask = text_inputs(model.null_text(), B)
        for sigma in sigmas:
            noise = torch.randn(latents.shape, generator=g, device=device)
            levels = torch.full((B, T), sigma, device=device)
            levels[:, 0] = 0.0
            noisy, target = noise_latents(latents, noise, levels)
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                prediction = model(noisy, 1000.0 * levels, text, mask, batch["raymap"], batch["plucker"])
            loss_mask = (levels > 0).float()
            losses.append(float(flow_matching_loss(prediction, target, loss_mask)))
    return sum(losses) / len(losses)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vae", required=True, help="the new VAE folder")
    p.add_argument("--assets", default=str(REPO / "src" / "sanawm" / "assets" / "embedded"), help="the old model folder")
    p.add_argument("--map-clips", type=int, default=64, help="clips that fit the map (training draws)")
    p.add_argument("--clips", type=int, default=16, help="held-out clips scored")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.95])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    t0 = time.perf_counter()

    from sanawm.model import SanaWMTransformer

    cfg = embedded_dit_config(args.vae)
    new_vae = _load_frozen_vae(args.vae, device)
    spec = read_model_dir(args.assets)
    old_vae = _load_frozen_vae(str(spec.components["vae"]), device)
    old = load_transformer(spec.components["transformer"]).to(device).eval()
    text_len = old.config.max_text_len

    def encode(source, count: int) -> tuple[list[dict], list[dict]]:
        new_encoded, old_encoded = [], []
        for start in range(0, count, 4):
            batch = source.finish([source.prepare(d) for d in range(start, min(count, start + 4))], device)
            new_encoded.append(encode_clips(batch, new_vae, text_len, device))
            old_encoded.append(encode_clips(batch, old_vae, text_len, device))
        return new_encoded, old_encoded

    def tokens(encoded: list[dict]) -> torch.Tensor:
        latents = torch.cat([e["latents"] for e in encoded])
        return latents.movedim(1, -1).reshape(-1, latents.shape[1]).double().cpu()

    # The map clips are the ones `warm_start` fits on (training draws of seed + 3).
    fit_new, fit_old = encode(make_source(cfg.data, cfg.run.seed + 3), args.map_clips)
    Q, q_offset = fit_latent_map(torch.cat([e["latents"] for e in fit_new]), torch.cat([e["latents"] for e in fit_old]))
    A, a_offset = least_squares_map(tokens(fit_new), tokens(fit_old))
    new_encoded, old_encoded = encode(make_source(cfg.data, cfg.run.seed, held_out=True), args.clips)
    x, y = tokens(new_encoded), tokens(old_encoded)
    r2 = 1.0 - float((x @ A.T + a_offset - y).square().mean() / y.var(dim=0).mean())

    rows = {"old DiT, old latents": mean_loss(old, old_encoded, args.sigmas, seed=1)}
    model_config = dit_config(cfg, new_vae)
    starts = {"mapped (orthogonal)": (Q, q_offset), "mapped (least squares)": (A, a_offset), "re-initialised": (None, None),
              "from scratch": None}  # fmt: skip
    for name, mapping in starts.items():
        torch.manual_seed(cfg.run.seed)
        model = SanaWMTransformer(model_config, device=device)
        model.init_weights()
        if mapping is not None:
            map_latent_layers(model, old, *mapping)
        rows[name] = mean_loss(model.eval(), new_encoded, args.sigmas, seed=1)
    zero = []
    g = torch.Generator(device=device).manual_seed(1)
    for batch in new_encoded:
        for _ in args.sigmas:
            noise = torch.randn(batch["latents"].shape, generator=g, device=device)
            zero.append(float((noise - batch["latents"])[:, :, 1:].square().mean()))
    rows["zero velocity"] = sum(zero) / len(zero)

    report = {"clips": args.clips, "map_clips": args.map_clips, "sigmas": args.sigmas, "loss": rows,
              "r2_old_from_new_held_out": r2, "device": str(device),
              "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"R^2 of the old latents from the new ones (least squares, {args.clips} held-out clips): {r2:.3f}")
    print("| start | loss |\n|---|---|")
    for name, value in rows.items():
        print(f"| {name} | {value:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
