"""The VAE stage: train the compact causal VAE on clips, then measure its latent statistics.

Objective per batch of videos x in [-1, 1] (posterior N(mu, sigma^2) from the encoder, one
reparameterised sample z, reconstruction y = decode(z)):

    l1 |y - x| + l2 (y - x)^2 + kl KL(q || N(0, I)) + gradient sum_axis |D_axis y - D_axis x|
    + first_frame (|y_0 - x_0| + (y_0 - x_0)^2)

all as per-element means; D_axis are forward differences along time, height and width (an
edge-preserving term that needs no perceptual network), y_0 / x_0 the first frames. Batches
are world clips plus `synthetic_clips` synthetic ones drawn on the device
(`sanawm.train.synthetic`: natural-image statistics the worlds lack; counted like
`run.batch_size`, per process or, with `run.global_batch_size`, over all). When training ends the EMA weights
encode `stats_clips` clips, the per-channel mean / std of the posterior means become the
VAE's latent normalisation (`set_latent_stats`), the VAE is saved to `RUN/vae`, and its
reconstruction PSNR on `eval_clips` clips of held-out worlds goes to `RUN/vae_eval.json`.

With `vae_loss.decoder_of` only the decoder of a saved VAE trains: the encoder and the latent
statistics stay, so a DiT trained on that VAE's latents keeps working with the new decoder. With
`vae_loss.latent_noise` the decoder reads z + s std eps (std the per-channel latent scale, s
uniform per clip): the errors a DiT leaves in its latents then decode to plausible pixels rather
than to the patterns a decoder trained on exact latents makes of them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from sanawm.evaluation.image_metrics import psnr
from sanawm.train.config import TrainConfig, VAELossConfig
from sanawm.train.data import make_source
from sanawm.train.distributed import DistContext
from sanawm.train.feed import ClipFeed, Encoded, sample_generators
from sanawm.train.loop import StandardSteps
from sanawm.train.synthetic import synthetic_clips
from sanawm.vae.base import VideoVAE

VAE_DIR = "vae"
EVAL_FILE = "vae_eval.json"
SHORTCUT_FIT_CLIPS = 32  # world clips (and as many synthetic ones) the linear code is fitted on
LOGVAR_START = -8.0  # posterior log-variance of a VAE that starts as its linear code


@torch.no_grad()
def fit_linear_shortcut(vae, video: torch.Tensor) -> None:
    """Start a `linear_shortcut` VAE as the best linear code of its size on `video` (B, 3, F, H, W)
    in [-1, 1]: each linear map becomes the top `latent_channels` principal components (float64
    covariance) of what it reads (first frames; later frame groups) and its transpose, and the
    convolutional paths' outputs start at zero (posterior log-variance `LOGVAR_START`)."""
    encode, decode = vae.encoder.linear, vae.decoder.linear
    for enc, dec, x in zip((encode.first, encode.rest), (decode.first, decode.rest), encode.fold(video)):
        samples = x.transpose(0, 1).reshape(x.shape[1], -1).double()  # (D, N)
        mean = samples.mean(dim=1)
        centred = samples - mean[:, None]
        _, vectors = torch.linalg.eigh(centred @ centred.T / samples.shape[1])
        basis = vectors[:, -vae.latent_channels :].flip(1).T  # (C, D), largest variance first
        enc.weight.copy_(basis.view(enc.weight.shape))
        enc.bias.copy_(-(basis @ mean))
        dec.weight.copy_(basis.T.reshape(dec.weight.shape))
        dec.bias.copy_(mean)
    c = vae.latent_channels
    vae.encoder.conv_out.conv.weight.zero_()
    vae.encoder.conv_out.conv.bias[:c].zero_()
    vae.encoder.conv_out.conv.bias[c:].fill_(LOGVAR_START)
    vae.decoder.conv_out.conv.weight.zero_()
    vae.decoder.conv_out.conv.bias.zero_()


def vae_loss_terms(
    reconstruction: torch.Tensor, video: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, cfg: VAELossConfig
) -> dict[str, torch.Tensor]:
    """The loss terms (module doc) of one encode / sample / decode pass; "loss" is their sum."""
    recon, target = reconstruction.float(), video.float()
    mean, logvar = mean.float(), logvar.float()
    diff = recon - target
    terms = {
        "l1": diff.abs().mean(),
        "l2": diff.square().mean(),
        "kl": 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean(),
        "gradient": sum((recon.diff(dim=d) - target.diff(dim=d)).abs().mean() for d in (2, 3, 4)),
        "first_frame": diff[:, :, 0].abs().mean() + diff[:, :, 0].square().mean(),
    }
    terms["loss"] = (
        cfg.l1_weight * terms["l1"] + cfg.l2_weight * terms["l2"]
        + cfg.kl_weight * terms["kl"] + cfg.gradient_weight * terms["gradient"]
        + cfg.first_frame_weight * terms["first_frame"]
    )  # fmt: skip
    return terms


class AutoencoderPass(nn.Module):
    """The VAE as one trainable forward: encode, sample z = mu + sigma * eps, decode.

    DDP and FSDP synchronise the work done inside a module's forward, and the VAE itself only
    has `encode` / `decode` methods; this wrapper is what the VAE stage trains. Its state dict
    is the VAE's with a `vae.` prefix."""

    def __init__(self, vae: nn.Module, train_encoder: bool = True, latent_noise: float = 0.0) -> None:
        super().__init__()
        self.vae = vae
        self.train_encoder = train_encoder
        self.latent_noise = latent_noise
        vae.encoder.requires_grad_(train_encoder)

    def forward(self, video: torch.Tensor, generators: list[torch.Generator]):
        """`generators`: one per clip; each clip's noise is drawn from its own (see `VAETask.loss`)."""
        with torch.set_grad_enabled(self.train_encoder and torch.is_grad_enabled()):
            mean, logvar = self.vae.encode_distribution(video)
        shape = (1, *mean.shape[1:])

        def draw(g: torch.Generator) -> torch.Tensor:
            return torch.randn(shape, generator=g, device=mean.device, dtype=mean.dtype)

        noise = torch.cat([draw(g) for g in generators])
        z = mean + torch.exp(0.5 * logvar) * noise
        if self.latent_noise > 0:  # drawn after the posterior sample, from the same generators
            scale = torch.cat([torch.rand(1, generator=g, device=mean.device) for g in generators]) * self.latent_noise
            extra = torch.cat([draw(g) for g in generators])
            std = self.vae.latents_std.view(1, -1, 1, 1, 1).to(mean.dtype)
            z = z + scale.view(-1, 1, 1, 1, 1).to(mean.dtype) * std * extra
        return self.vae.decode_raw(z), mean, logvar


def clip_psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of one clip (3, F, H, W) in [-1, 1] (clamped), over all its pixels at once
    (`sanawm.evaluation.psnr` of the clip laid out as one tall image)."""
    a, b = (x.float().clamp(-1, 1).permute(1, 2, 3, 0).flatten(0, 1) for x in (reconstruction, target))
    return float(psnr(a, b, data_range=2.0)[0])


@torch.no_grad()
def latent_stats(vae, source, draws: range, device: torch.device, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the raw posterior means over the clips `draws` of `source`
    (accumulated in float64 over every latent position)."""
    total = square = None
    count = 0
    for start in range(draws.start, draws.stop, batch_size):
        clips = [source.prepare(d) for d in range(start, min(start + batch_size, draws.stop))]
        mean, _ = vae.encode_distribution(source.finish(clips, device).pixels())
        flat = mean.double().transpose(0, 1).reshape(mean.shape[1], -1)
        total = flat.sum(1) if total is None else total + flat.sum(1)
        square = flat.square().sum(1) if square is None else square + flat.square().sum(1)
        count += flat.shape[1]
    mu = total / count
    std = (square / count - mu.square()).clamp_min(1e-12).sqrt()
    return mu.float().cpu(), std.float().cpu()


@torch.no_grad()
def reconstruction_psnr(vae, source, draws: range, device: torch.device, batch_size: int) -> dict:
    """Mean PSNR (dB) of encode -> decode over the clips `draws`, and the per-clip values."""
    values = []
    for start in range(draws.start, draws.stop, batch_size):
        clips = [source.prepare(d) for d in range(start, min(start + batch_size, draws.stop))]
        video = source.finish(clips, device).pixels()
        recon = vae.decode(vae.encode(video))
        values += [clip_psnr(r, v) for r, v in zip(recon, video)]
    return {"psnr_db": sum(values) / len(values), "clips": len(values), "per_clip_db": values}


class VAETask(StandardSteps):
    """The `Task` of the VAE stage (see `sanawm.train.loop`)."""

    name = "vae"
    find_unused_parameters = False

    def __init__(self, config: TrainConfig, ctx: DistContext) -> None:
        from sanawm.vae import CompactVAE, CompactVAEConfig

        self.config = config
        self.ctx = ctx
        self.decoder_only = bool(config.vae_loss.decoder_of)
        torch.manual_seed(config.run.seed)
        if self.decoder_only:
            vae = CompactVAE.load(config.vae_loss.decoder_of).to(ctx.device)
            self.vae_config = vae.config
        else:
            self.vae_config = CompactVAEConfig(**dataclasses.asdict(config.vae))
            vae = CompactVAE(self.vae_config).to(ctx.device)
        vae.check_num_frames(config.data.num_frames)
        vae.check_image_size(config.data.height, config.data.width)
        if self.vae_config.linear_shortcut and not self.decoder_only:  # (a resumed run loads its checkpoint over this)
            fit_source = make_source(config.data, config.run.seed + 2)
            clips = fit_source.finish([fit_source.prepare(d) for d in range(SHORTCUT_FIT_CLIPS)], ctx.device).video
            d = config.data
            g = torch.Generator(device=ctx.device).manual_seed(config.run.seed + 2)
            clips = torch.cat([clips, synthetic_clips(SHORTCUT_FIT_CLIPS, d.num_frames, d.height, d.width, g)])
            fit_linear_shortcut(vae, VideoVAE.preprocess(clips))
        self.module = AutoencoderPass(vae, train_encoder=not self.decoder_only, latent_noise=config.vae_loss.latent_noise)
        source = make_source(config.data, config.run.seed)
        d = config.data
        # Synthetic clips per step count like run.batch_size: over all processes when
        # run.global_batch_size is set, per process otherwise.
        synthetic = config.vae_loss.synthetic_clips * (1 if config.run.global_batch_size else ctx.world_size)
        self.feed = ClipFeed(
            source, self.encode,
            batch_size=config.run.local_batch(ctx.world_size), seed=config.run.seed,
            device=ctx.device, pool_size=d.pool_size, extra_per_step=synthetic,
            fresh_per_step=d.fresh_per_step, workers=d.workers, rank=ctx.rank, world_size=ctx.world_size,
        )  # fmt: skip

    def shard_units(self) -> list[nn.Module]:
        from sanawm.vae.compact import ResBlock

        return [m for m in self.module.modules() if isinstance(m, ResBlock)]

    def encode(self, batch) -> Encoded:
        return {"video": batch.video}  # uint8 keeps a replay pool small

    def loss(self, model: nn.Module, batch: Encoded, shared: torch.Generator, local: torch.Generator):
        # Every clip (world or synthetic) draws from the generator of its global batch position,
        # so the step does not depend on how the batch is split over processes.
        video = batch["video"]
        gens = sample_generators(batch["sample_seed"], video.device)
        if "extra_seed" in batch:
            _, frames, height, width, _ = video.shape
            extra_gens = sample_generators(batch["extra_seed"], video.device)
            with torch.autocast(video.device.type, enabled=False):  # drawn in float32
                extra = [synthetic_clips(1, frames, height, width, g) for g in extra_gens]
            video = torch.cat([video, *extra])
            gens += extra_gens
        video = VideoVAE.preprocess(video)
        recon, mean, logvar = model(video, gens)
        terms = vae_loss_terms(recon, video, mean, logvar, self.config.vae_loss)
        return terms["loss"], {k: float(v.detach()) for k, v in terms.items() if k != "loss"}

    def finish(self, run_dir: Path, model_state: dict, ema_state: dict) -> dict:
        from sanawm.vae import CompactVAE

        cfg, device = self.config, self.ctx.device
        vae = CompactVAE(self.vae_config)
        state = dict(model_state)
        state.update(ema_state)
        prefix = "vae."
        vae.load_state_dict({k[len(prefix) :]: v for k, v in state.items()})
        vae = vae.to(device).eval()
        batch = max(1, min(cfg.run.local_batch(self.ctx.world_size), 8))
        if not self.decoder_only:  # (a fixed encoder keeps the statistics its latents were normalised by)
            stats_source = make_source(cfg.data, cfg.run.seed + 1)
            mean, std = latent_stats(vae, stats_source, range(cfg.vae_loss.stats_clips), device, batch)
            vae.set_latent_stats(mean, std)
        out = Path(run_dir) / VAE_DIR
        vae.cpu().save(out)
        vae.to(device)
        held_out = make_source(cfg.data, cfg.run.seed, held_out=True)
        evaluation = reconstruction_psnr(vae, held_out, range(cfg.vae_loss.eval_clips), device, batch)
        evaluation.update(
            held_out_worlds=cfg.data.source == "procedural", size=[cfg.data.height, cfg.data.width],
            frames=cfg.data.num_frames, parameters=sum(p.numel() for p in vae.parameters()),
        )  # fmt: skip
        (Path(run_dir) / EVAL_FILE).write_text(json.dumps(evaluation, indent=2) + "\n")
        return {"vae_dir": str(out), "psnr_db": evaluation["psnr_db"]}


__all__ = ["AutoencoderPass", "VAETask", "clip_psnr", "fit_linear_shortcut", "latent_stats", "reconstruction_psnr", "vae_loss_terms"]
