"""Train the embedded default model (compact VAE + small DiT) on procedural worlds, within a time budget.

    python scripts/train_embedded.py --out "$OUT" --budget 540     # one H100, one device command
    python scripts/train_embedded.py --out /tmp/smoke --smoke        # tiny CPU run of the same steps
    python scripts/train_embedded.py --out "$OUT" --budget 400 --vae-only --vae-channels 64
    python scripts/train_embedded.py --out "$OUT" --budget 450 --vae runs/vae2/vae   # the DiT on another VAE
    python scripts/train_embedded.py --out "$OUT" --budget 200 --vae-only --decoder-of model/vae --latent-noise 0.5

With `--vae-only` it trains a new VAE (the recipe's v2, `--vae-channels` latent channels) for
the whole budget and stops: `--out` gets `vae/` (config + bfloat16 weights), `vae_report.json`
(held-out PSNR, steps, time, the config) and `train_log.jsonl`. `--decoder-of DIR` trains only
the decoder of the VAE in DIR (its encoder and latent statistics stay, so a DiT trained on its
latents keeps working), with `--latent-noise` on the latents it reads (`sanawm.train.vae`).

What it does, in order, never running past `--budget` seconds (checkpoints are saved first):

1. VAE: reuse `RUN/vae_stage/vae` (trained by an earlier call on this machine), else the
   committed `src/sanawm/assets/embedded/vae`, else train the compact VAE for `--vae-share` of
   the budget, measure its latent statistics and its PSNR on held-out worlds.
   `--vae DIR` takes that VAE instead.
2. DiT: resume `RUN/dit_stage` if it has a checkpoint; else start from the committed DiT
   weights: all of them when the VAE is the committed one, and for another VAE of the same
   strides (`--vae`) every block, with the latent input / output layers mapped between the
   two VAEs' latents by a map with orthonormal rows fitted on `--map-clips` clips
   (`sanawm.train.dit.warm_start`; 0 re-initialises them); `--from-scratch`, or no committed model: from scratch. Trains until
   the budget.
3. Copies the result to `--out` (8 files at most, each < 16 MiB): the model folder
   (`model/...`, 5 files), `train_log.jsonl`, `vae_eval.json`, `summary.txt`; prints the table.

RUN (`--run-dir`, default `out/embedded`, git-ignored) keeps full checkpoints between calls on
a machine that stays up; commit `model/` into `src/sanawm/assets/embedded/` to keep progress
across machines.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from sanawm.train import format_summary, from_dict, to_dict, train
from sanawm.train.checkpoint import find_checkpoint
from sanawm.train.dit import describe
from sanawm.train.distributed import setup, teardown
from sanawm.train.embedded import VAE2_LATENT_CHANNELS, embedded_dit_config, embedded_vae_config

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "src" / "sanawm" / "assets" / "embedded"
RESUMED_WARMUP_STEPS = 50
MAPPED_WARMUP_STEPS = 100  # the two latent layers start from a fitted map, not from training
FINAL_COPY_S = 10.0  # seconds kept for copying the results to --out


def _smoke(cfg, vae: bool):
    """Shrink a recipe to seconds on a CPU (same code paths, tiny shapes)."""
    values = to_dict(cfg)
    values["data"].update(num_frames=5 if vae else 9, height=16, width=16, pool_size=2, fresh_per_step=1, workers=0)
    values["run"].update(batch_size=2, log_every=1, checkpoint_every=2, steps=4)
    if vae:
        values["vae"].update(latent_channels=4, channels=[8, 8, 8])
        values["vae_loss"].update(stats_clips=2, eval_clips=2, synthetic_clips=1)
    else:
        values["dit"]["overrides"] = {"depth": 2, "hidden_size": 64, "head_dim": 32, "softmax_blocks": [1],
                                      "caption_channels": 8, "max_text_len": 2}  # fmt: skip
        values["export"]["steps"] = 2
    return from_dict(values)


def _same_dit(cfg, assets: Path) -> bool:
    """Whether the committed DiT has the architecture this recipe trains (else start afresh)."""
    from sanawm.train.dit import dit_config
    from sanawm.vae import load_vae

    path = assets / "transformer" / "config.json"
    if not path.is_file():
        return False
    wanted = json.loads(json.dumps(dataclasses.asdict(dit_config(cfg, load_vae(cfg.dit.vae)))))
    return json.loads(path.read_text()) == wanted


def _export_vae(vae_run: Path, out: Path, cfg, summary, seconds: float) -> None:
    """`--vae-only` results: the VAE with bfloat16 weights (latent statistics stay float32),
    its report and the training log."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "vae", ignore_errors=True)
    shutil.copytree(vae_run / "vae", out / "vae")
    weights = out / "vae" / "model.safetensors"
    state = load_file(str(weights))
    state = {k: v if k.startswith("latents_") else v.to(torch.bfloat16) for k, v in state.items()}
    save_file(state, str(weights))
    report = json.loads((vae_run / "vae_eval.json").read_text())
    report.update(steps=summary.end_step, seconds=round(seconds, 1), config=to_dict(cfg))
    (out / "vae_report.json").write_text(json.dumps(report, indent=2) + "\n")
    if (vae_run / "metrics.jsonl").is_file():  # a budget too small for a step logs nothing
        shutil.copyfile(vae_run / "metrics.jsonl", out / "train_log.jsonl")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "out/embedded_export"), help="where results go")
    parser.add_argument("--run-dir", default=str(REPO / "out" / "embedded"), help="checkpoints kept between calls")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds this call may take in all")
    parser.add_argument("--vae-share", type=float, default=0.4, help="part of the budget for a new VAE")
    parser.add_argument("--batch-size", type=int, default=32, help="DiT clips per step")
    parser.add_argument("--vae-batch-size", type=int, default=8)
    parser.add_argument("--vae-pool", type=int, default=512,
                        help="VAE replay pool (clips rendered before the first step; smaller for short runs)")
    parser.add_argument("--pool", type=int, default=256, help="DiT replay pool (clips)")
    parser.add_argument("--fresh", type=int, default=4, help="new clips per DiT step")
    parser.add_argument("--workers", type=int, default=max(0, min(8, (os.cpu_count() or 1) - 2)))
    parser.add_argument("--assets", default=str(ASSETS), help="committed embedded model to start from")
    parser.add_argument("--vae-only", action="store_true", help="train a new VAE for the whole budget, no DiT")
    parser.add_argument("--vae-channels", type=int, default=VAE2_LATENT_CHANNELS, help="latent channels of a new VAE")
    parser.add_argument("--linear-shortcut", action="store_true", help="a new VAE starts as a linear code (PCA)")
    parser.add_argument("--decoder-of", metavar="VAE_DIR",
                        help="with --vae-only: train only this VAE's decoder (encoder and latent statistics kept)")
    parser.add_argument("--latent-noise", type=float, default=0.0,
                        help="with --vae-only: the decoder reads latents with noise up to this std (normalised units)")
    parser.add_argument("--vae-steps", type=int,
                        help="with --vae-only: stop after this many steps (0: the linear code as fitted)")
    parser.add_argument("--vae", help="train the DiT on this VAE folder (default: the committed one)")
    parser.add_argument("--map-clips", type=int, default=64,
                        help="clips that fit the latent map of a warm start on another VAE (0: re-initialise)")
    parser.add_argument("--from-scratch", action="store_true", help="no warm start from the committed DiT")
    parser.add_argument("--lr", type=float, help="learning rate of the stage trained (default: the recipe's)")
    parser.add_argument("--channel-weight-power", type=float, default=0.0,
                        help="DiT loss per latent channel ~ (its latent std)^(2 x this): 0 alike, 1 as pixel variance")
    parser.add_argument("--causal-prob", type=float,
                        help="chance a DiT step is chunk-causal, as streaming runs (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0,
                        help="DiT data and noise seed (another one when continuing a model on fresh clips)")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run (checks the script)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.lr is not None and args.lr <= 0:
        parser.error("--lr must be > 0")
    if args.vae_steps is not None and (args.vae_steps < 0 or not args.vae_only):
        parser.error("--vae-steps needs --vae-only and a count >= 0")
    if (args.decoder_of or args.latent_noise) and not args.vae_only:
        parser.error("--decoder-of and --latent-noise need --vae-only")
    if not 0 <= args.channel_weight_power <= 2:
        parser.error("--channel-weight-power must lie in [0, 2]")
    if args.channel_weight_power and args.vae_only:
        parser.error("--channel-weight-power weighs the DiT's loss: not with --vae-only")
    if args.causal_prob is not None and (not 0 <= args.causal_prob <= 1 or args.vae_only):
        parser.error("--causal-prob must lie in [0, 1], and not with --vae-only")
    if args.latent_noise < 0:
        parser.error("--latent-noise must be >= 0")
    if args.decoder_of and not (Path(args.decoder_of) / "config.json").is_file():
        parser.error(f"--decoder-of: no VAE in {args.decoder_of} (config.json missing)")

    t0 = time.monotonic()
    run_dir, out = Path(args.run_dir), Path(args.out)
    assets = None if args.smoke else Path(args.assets)
    committed = assets is not None and (assets / "model.json").is_file()
    ctx = setup("cpu" if args.smoke else "")
    summaries = []

    def remaining() -> float:
        return args.budget - (time.monotonic() - t0) - FINAL_COPY_S

    # 1. The VAE.
    vae_run = run_dir / "vae_stage"
    if args.vae_only:
        cfg = embedded_vae_config(
            args.vae_batch_size, args.workers, args.vae_pool, latent_channels=args.vae_channels,
            linear_shortcut=args.linear_shortcut,
        )
        if args.smoke:
            cfg = _smoke(cfg, vae=True)
        if args.vae_steps is not None:
            cfg.run.steps = args.vae_steps
        if args.lr is not None:
            cfg.optim.lr = args.lr
        cfg.vae_loss.decoder_of = args.decoder_of or ""
        cfg.vae_loss.latent_noise = args.latent_noise
        cfg.run.time_budget_s = remaining()
        cfg.run.progress = not args.no_progress
        summary = train(cfg, vae_run, resume="latest")
        teardown()
        if ctx.is_main:
            _export_vae(vae_run, out, cfg, summary, time.monotonic() - t0)
            print(format_summary([summary]))
        return 0
    if args.vae:
        vae_dir, vae_note = Path(args.vae), "given (--vae)"
    elif (vae_run / "vae" / "config.json").is_file():
        vae_dir, vae_note = vae_run / "vae", "reused from an earlier call"
    elif committed:
        vae_dir, vae_note = assets / "vae", "the committed one"
    else:
        cfg = embedded_vae_config(args.vae_batch_size, args.workers, args.vae_pool)
        if args.smoke:
            cfg = _smoke(cfg, vae=True)
        cfg.run.time_budget_s = args.vae_share * remaining()
        cfg.run.progress = not args.no_progress
        summaries.append(train(cfg, vae_run, resume="latest"))
        vae_dir, vae_note = vae_run / "vae", "trained now"

    # 2. The DiT.
    dit_run = run_dir / "dit_stage"
    cfg = embedded_dit_config(str(vae_dir), args.batch_size, args.workers, args.pool, args.fresh)
    if args.smoke:
        cfg = _smoke(cfg, vae=False)
    if args.lr is not None:
        cfg.optim.lr = args.lr
    cfg.run.seed = args.seed
    cfg.objective.channel_weight_power = args.channel_weight_power
    if args.causal_prob is not None:
        cfg.objective.causal_prob = args.causal_prob
    has_checkpoint = find_checkpoint(dit_run, "latest") is not None
    if not has_checkpoint and committed and not args.from_scratch:
        if vae_dir == assets / "vae" and _same_dit(cfg, assets):
            cfg.dit.init_from = str(assets)
            # Trained weights need no long warm-up, only enough steps for AdamW's moments to settle.
            cfg.optim.warmup_steps = RESUMED_WARMUP_STEPS
        elif args.vae:
            cfg.dit.init_from, cfg.dit.init_map_clips = str(assets), args.map_clips
            cfg.optim.warmup_steps = MAPPED_WARMUP_STEPS
    cfg.run.time_budget_s = max(remaining(), 1.0)
    cfg.run.progress = not args.no_progress
    summaries.append(train(cfg, dit_run, resume="latest"))
    teardown()
    if not ctx.is_main:
        return 0

    # 3. Results.
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "model", ignore_errors=True)
    shutil.copytree(dit_run / "model", out / "model")
    with (out / "train_log.jsonl").open("w") as log:
        for metrics in (vae_run / "metrics.jsonl", dit_run / "metrics.jsonl"):
            if metrics.is_file():
                log.write(metrics.read_text())
    if (vae_run / "vae_eval.json").is_file():
        report = json.loads((vae_run / "vae_eval.json").read_text())
        report.pop("per_clip_db", None)
        (out / "vae_eval.json").write_text(json.dumps(report, indent=2) + "\n")
    start = "resumed" if has_checkpoint else ("from the committed DiT" if cfg.dit.init_from else "from scratch")
    if "warm_start" in summaries[-1].result:
        start += f" ({summaries[-1].result['warm_start']})"
    from sanawm.model import SanaWMConfig

    exported = json.loads((out / "model" / "transformer" / "config.json").read_text())
    exported["softmax_blocks"] = tuple(exported["softmax_blocks"])
    lines = [
        format_summary(summaries),
        f"VAE: {vae_note} ({vae_dir})",
        f"DiT: {describe(SanaWMConfig(**exported))}",
        f"DiT run: {start}; data {cfg.data.num_frames} frames at {cfg.data.height}x{cfg.data.width}, "
        f"batch {cfg.run.batch_size}, pool {cfg.data.pool_size} (+{cfg.data.fresh_per_step}/step), "
        f"lr {cfg.optim.lr:g}, seed {cfg.run.seed}, channel weights ~ latent std^(2 x {args.channel_weight_power:g}), "
        f"chunk-causal steps {cfg.objective.causal_prob:g}",
        f"total {time.monotonic() - t0:.0f} s of a {args.budget:.0f} s budget; model folder: {out / 'model'}",
    ]
    if (out / "vae_eval.json").is_file():
        report = json.loads((out / "vae_eval.json").read_text())
        lines.insert(2, f"VAE PSNR on {report['clips']} held-out clips: {report['psnr_db']:.2f} dB")
    text = "\n".join(lines)
    (out / "summary.txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
