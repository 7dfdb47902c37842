"""The recipe of the embedded default model (`sanawm/assets/embedded`), trained on procedural worlds.

Sizes: 128x128 video, 33 frames (9 latent frames of 16x16 through the compact VAE's 4x8x8
strides, 2304 tokens), a DiT of the release's hybrid architecture scaled down: 8 blocks of
width 192 (3 heads of 64), softmax attention in blocks 3 and 7 like the release's "every 4th",
GDN in the others, the camera branch and chunk-Plücker injection in every block; about 8 M
parameters. With the compact VAE v2 (5.1 M, 64 latent channels) the shipped folder is 18.6 MB
(DiT int8, VAE float16), and a 33-frame clip takes ~24 forwards of well under a second each on a
2-core CPU.

No text encoder: the DiT always sees its null caption (`max_text_len` 4 rows of width 64).
"""

from __future__ import annotations

from sanawm.train.config import TrainConfig, from_dict

EMBEDDED_SIZE = (128, 128)
EMBEDDED_FRAMES = 33
VAE_FRAMES = 17  # shorter clips are enough for a fully convolutional causal VAE

EMBEDDED_DIT = {
    "preset": "small",
    "overrides": {
        "depth": 8,
        "hidden_size": 192,
        "head_dim": 64,
        "softmax_blocks": [3, 7],
        "caption_channels": 64,
        "max_text_len": 4,
    },
}


# VAE v2 (issue 16): the v1 layout (strides 4 x 8 x 8, so the DiT's token count is unchanged)
# with more latent channels, trained on world clips plus as many synthetic natural-looking
# clips, frame 0 weighted up. Only the decoder runs per streamed chunk on the CPU, and its cost
# hardly depends on the latent channels (its first conv alone reads them).
VAE2_LATENT_CHANNELS = 64


def embedded_vae_config(
    batch_size: int = 8, workers: int = 0, pool_size: int = 512, latent_channels: int = VAE2_LATENT_CHANNELS,
    linear_shortcut: bool = False,
) -> TrainConfig:
    """The compact VAE v2 on procedural renders + synthetic clips (`batch_size` of each per step);
    `linear_shortcut`: started as a linear code (`sanawm.vae.compact`)."""
    height, width = EMBEDDED_SIZE
    return from_dict({
        "stage": "vae",
        "data": {"num_frames": VAE_FRAMES, "height": height, "width": width, "workers": workers,
                 "pool_size": pool_size, "fresh_per_step": 1},
        "vae": {"latent_channels": latent_channels, "linear_shortcut": linear_shortcut},
        "optim": {"lr": 5e-4, "warmup_steps": 200, "ema_decay": 0.999, "weight_decay": 0.0},
        "vae_loss": {"stats_clips": 64, "eval_clips": 32, "first_frame_weight": 0.5,
                     "synthetic_clips": batch_size},
        "run": {"steps": 100_000, "batch_size": batch_size, "log_every": 25, "checkpoint_every": 1000},
    })  # fmt: skip


def embedded_dit_config(
    vae_dir: str, batch_size: int = 32, workers: int = 0, pool_size: int = 256, fresh_per_step: int = 4
) -> TrainConfig:
    """The DiT on the VAE's latents of procedural clips (33 frames, 128x128)."""
    height, width = EMBEDDED_SIZE
    return from_dict({
        "stage": "dit",
        "data": {"num_frames": EMBEDDED_FRAMES, "height": height, "width": width, "workers": workers,
                 "pool_size": pool_size, "fresh_per_step": fresh_per_step},
        "dit": {**EMBEDDED_DIT, "vae": vae_dir},
        "objective": {"sigma_shift": 3.0, "frame_noise_prob": 0.3, "text_dropout": 0.0, "camera_dropout": 0.1,
                      "causal_prob": 0.25, "chunk_size": 3},
        "optim": {"lr": 4e-4, "warmup_steps": 300, "ema_decay": 0.999},
        # Camera guidance 2: on held-out worlds it cuts TransErr and CamMC by about a third
        # against guidance off, at twice the cost per step (benchmarks/README.md).
        # context_sigma: v2 streamed with clean commits drifts out of range after ~6 s
        # (benchmarks/streaming/README.md); committed at 0.4 it holds over minutes.
        "export": {"steps": 24, "camera_cfg": 2.0, "fps": 16.0, "context_sigma": 0.4, "dtype": "float16"},
        "run": {"steps": 1_000_000, "batch_size": batch_size, "log_every": 25, "checkpoint_every": 1000},
    })  # fmt: skip


# The distilled student (issue 14): SANA-WM's published recipe (NVlabs/Sana longsana configs)
# at the embedded model's size. Stages: ODE regression -> self-forcing DMD warm-up with the full
# cache -> self-forcing DMD on longer clips with a bounded cache: `num_cached_blocks=2` with the
# sink token, which keeps the first chunk (the sink) and the last chunk (their training pipeline
# caches chunk 0 plus chunks i - num_cached_blocks + 1 .. i - 1; window 1 here). The official clips
# are 43 / 43 / 121 latent frames; ours 13 / 13 / 25 (49 and 97 video frames), chunks of 3.
DISTILL_TIMESTEPS = (1000.0, 967.0, 908.0, 764.0)
DISTILL_FRAMES = (49, 49, 97)
DISTILL_STEPS = (3000, 700, 3000)


def embedded_distill_configs(
    teacher: str, batch_size: int = 8, workers: int = 0, pool_size: int = 64, pairs: int = 2048
) -> list[TrainConfig]:
    """The three distillation stages of the embedded student, in order. Each later stage starts
    from the previous one's result: set `distill.student_init` (and, for the last, `critic_init`)."""
    height, width = EMBEDDED_SIZE
    common = {
        "data": {"height": height, "width": width, "workers": workers, "pool_size": pool_size, "fresh_per_step": 2},
        "export": {"fps": 16.0, "dtype": "float16"},
    }
    distill = {"teacher": teacher, "timesteps": list(DISTILL_TIMESTEPS), "pairs": pairs}
    run = {"batch_size": batch_size, "log_every": 25, "checkpoint_every": 250}
    ode = {
        **common, "stage": "distill-ode",
        "data": {**common["data"], "num_frames": DISTILL_FRAMES[0]},
        "distill": distill,
        "optim": {"lr": 2e-5, "warmup_steps": 0, "ema_decay": 0.99},
        "run": {**run, "steps": DISTILL_STEPS[0]},
    }  # fmt: skip
    dmd = {
        "generator_every": 5, "critic_lr": 2e-6, "score_shift": 10.0, "score_timesteps": [20.0, 980.0],
    }  # fmt: skip
    dmd_optim = {"lr": 1e-5, "betas": [0.0, 0.999], "warmup_steps": 0, "ema_decay": 0.99}
    warmup = {
        **common, "stage": "distill-dmd",
        "data": {**common["data"], "num_frames": DISTILL_FRAMES[1]},
        "distill": {**distill, **dmd, "cache_window": -1},
        "optim": dmd_optim, "run": {**run, "steps": DISTILL_STEPS[1]},
    }  # fmt: skip
    final = {
        **warmup,
        "data": {**common["data"], "num_frames": DISTILL_FRAMES[2]},
        "distill": {**distill, **dmd, "cache_window": 1, "cache_sink": -1},
        "run": {**run, "steps": DISTILL_STEPS[2]},
    }  # fmt: skip
    return [from_dict(c) for c in (ode, warmup, final)]


__all__ = [
    "DISTILL_FRAMES",
    "DISTILL_STEPS",
    "DISTILL_TIMESTEPS",
    "EMBEDDED_DIT",
    "EMBEDDED_FRAMES",
    "EMBEDDED_SIZE",
    "VAE2_LATENT_CHANNELS",
    "embedded_dit_config",
    "embedded_distill_configs",
    "embedded_vae_config",
]
