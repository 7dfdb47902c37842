"""Training configuration: nested dataclasses, read from JSON and overridden by CLI flags.

A config file mirrors `TrainConfig`: one object per section, only the fields to change, e.g.

    {"stage": "dit", "run": {"steps": 20000, "batch_size": 16},
     "data": {"height": 128, "width": 128, "procedural": {"fov_deg": [50, 75]}},
     "dit": {"preset": "small", "overrides": {"depth": 6}}}

Unknown keys are errors that name the key, so typos never pass silently.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from sanawm.errors import UserInputError
from sanawm.jsonfile import read_json_object

STAGES = ("vae", "dit", "distill-ode", "distill-dmd")
DISTILL_STAGES = ("distill-ode", "distill-dmd")
STRATEGIES = ("ddp", "fsdp")
PRECISIONS = ("bf16", "fp32")
TRAJECTORY_FAMILIES = ("walk", "spline", "loop")


@dataclass
class ProceduralConfig:
    """Clips rendered on the fly from random procedural worlds (`sanawm.worlds`)."""

    kinds: tuple[str, ...] = ("room", "corridor", "street", "terrain")
    """World kinds to draw from (uniformly)."""
    trajectory_weights: tuple[float, float, float] = (0.6, 0.3, 0.1)
    """Relative frequency of action walks, smooth splines and closed loops."""
    fov_deg: tuple[float, float] = (50.0, 75.0)
    """Range of the horizontal field of view (uniform)."""
    speed_scale: tuple[float, float] = (0.6, 1.6)
    """Range of the factor on the 0.05 m / 1.2 degree per-frame speeds (log-uniform)."""
    supersample: int = 1
    """Rays per pixel side (anti-aliasing; costs supersample^2)."""


@dataclass
class FolderConfig:
    """Real clips from a folder: `NAME.mp4` + `NAME.camera.npz` (or RealEstate10K `NAME.txt`)."""

    root: str = ""
    """The folder (searched recursively)."""
    frame_strides: tuple[int, ...] = (1,)
    """Temporal subsampling factors to choose from (those the clip is long enough for)."""
    max_zoom: float = 1.0
    """Random crops: the frame is resized to cover the training size times U(1, max_zoom),
    then cropped at a random position (1 = resize-to-cover and a random crop along the long side)."""


@dataclass
class DataConfig:
    """What the model is trained on."""

    source: str = "procedural"
    """"procedural" or "folder"."""
    num_frames: int = 33
    """Frames per clip (the VAE's stride_t * k + 1)."""
    height: int = 128
    width: int = 128
    procedural: ProceduralConfig = field(default_factory=ProceduralConfig)
    folder: FolderConfig = field(default_factory=FolderConfig)
    workers: int = 0
    """DataLoader worker processes that prepare clips on the CPU (0: in the training process)."""
    pool_size: int = 0
    """Replay pool: keep the last `pool_size` encoded clips and sample batches from it, so that
    expensive clips (ray tracing, video decoding) are used several times. 0: every batch fresh."""
    fresh_per_step: int = 1
    """New clips added to the pool per step (with a pool); 0 keeps the first `pool_size`
    clips for the whole run (overfitting a fixed set: a quick check that a model can learn)."""


@dataclass
class DiTModelConfig:
    """The stage-1 DiT: a `sanawm.model` preset plus `SanaWMConfig` field overrides."""

    preset: str = "small"
    overrides: dict[str, Any] = field(default_factory=dict)
    vae: str = ""
    """Folder of the trained VAE whose latent space the DiT learns (required)."""
    init_from: str = ""
    """Optional model folder or transformer folder whose weights start the training (the
    optimizer starts fresh); ignored when resuming. A model folder whose DiT differs only in
    its latent channels (trained on another VAE of the same strides) starts it too: every
    block is copied and the latent input / output layers are mapped (`init_map_clips`)."""
    init_map_clips: int = 64
    """Clips encoded by both VAEs to fit the latent map of a warm start across VAEs
    (`sanawm.train.dit.map_latent_layers`); 0 re-initialises the two latent layers instead."""


@dataclass
class VAEModelConfig:
    """The compact VAE (`sanawm.vae.CompactVAEConfig` fields)."""

    latent_channels: int = 16
    channels: tuple[int, ...] = (32, 64, 128)
    temporal_downsample: tuple[bool, ...] = (True, True)
    patch_size: int = 2
    blocks_per_level: int = 1
    linear_shortcut: bool = False
    """A linear code beside the convolutions, started as principal components of training
    frames (`sanawm.vae.compact` module doc)."""


@dataclass
class FlowMatchingConfig:
    """The DiT objective (see `sanawm.train.objective`)."""

    sigma_shift: float = 3.0
    """Noise levels are shift(u) with u ~ logit-normal; exported as the sampler's flow_shift."""
    logit_mean: float = 0.0
    logit_std: float = 1.0
    frame_noise_prob: float = 0.5
    """Chance that a clip gets an independent noise level per latent frame (else one level)."""
    text_dropout: float = 0.1
    """Chance that a clip's text is replaced by the null embedding (text guidance)."""
    camera_dropout: float = 0.1
    """Chance that a step runs without camera inputs (camera guidance); whole steps, so that
    every rank agrees on which parameters are used."""
    causal_prob: float = 0.0
    """Chance that a step is chunk-causal (what streaming generation runs): a clean prefix of
    chunks, then one noise level per chunk."""
    chunk_size: int = 2
    """Latent frames per chunk in chunk-causal steps (and the exported streaming default)."""
    channel_weight_power: float = 0.0
    """Weigh each latent channel's error by (its VAE latent std)^(2 x this), mean 1
    (`sanawm.train.objective.channel_loss_weights`): 0 alike, 1 as its share of pixel variance
    under a linear code."""


@dataclass
class VAELossConfig:
    """The compact VAE objective (see `sanawm.train.vae`)."""

    l1_weight: float = 1.0
    l2_weight: float = 1.0
    kl_weight: float = 1e-6
    gradient_weight: float = 0.5
    """Weight of the L1 loss between finite differences (x, y, time) of output and input:
    keeps edges sharp without a perceptual network."""
    first_frame_weight: float = 0.0
    """Extra weight of frame 0's L1 + L2 terms: frame 0 is the image a world model starts from
    (and the only frame of a one-image round trip)."""
    synthetic_clips: int = 0
    """Synthetic natural-looking clips (`sanawm.train.synthetic`) drawn on the device and added
    to every batch of world clips."""
    stats_clips: int = 64
    """Clips encoded to measure the per-channel latent mean / std after training."""
    decoder_of: str = ""
    """A saved compact VAE whose decoder alone trains: its encoder and latent statistics stay
    as they are, so a DiT trained on its latents stays valid (`vae` fields are ignored)."""
    latent_noise: float = 0.0
    """The decoder reads latents with Gaussian noise of standard deviation s (in normalised
    latent units) added, s ~ U(0, latent_noise) per clip: it learns to take a DiT's errors to
    plausible pixels instead of decoding them as they are."""
    eval_clips: int = 32
    """Held-out clips (worlds never trained on) for the reconstruction PSNR."""


@dataclass
class DistillConfig:
    """Few-step distillation of a model folder into a streaming student (see `sanawm.train.distill_ode`,
    `sanawm.train.distill_dmd`). The optimizer section sets the student's (generator's) lr and betas."""

    teacher: str = ""
    """Model folder of the teacher (required): ODE trajectories, the real score, the critic's
    initial weights and the VAE whose latents the student works in."""
    student_init: str = ""
    """Model folder whose transformer starts the student (typically the ODE stage's `RUN/model`);
    empty: the teacher's weights. Ignored when resuming."""
    critic_init: str = ""
    """DMD: transformer folder that starts the critic (a previous DMD run's `RUN/critic`);
    empty: the teacher's weights."""
    timesteps: tuple[float, ...] = (1000.0, 967.0, 908.0, 764.0)
    """The student's denoising timesteps (0..1000 scale, decreasing from 1000); it is trained on
    them and the exported model folder samples with them (predict clean, re-noise to the next)."""
    teacher_steps: int = 0
    """Euler steps of the teacher's trajectories (the student's levels are added to its grid);
    0: the teacher folder's default."""
    teacher_cfg: float = 0.0
    """Text guidance of the teacher (ODE trajectories and real score); 0: the teacher's default.
    Applied only to clips with captions."""
    teacher_camera_cfg: float = 0.0
    """Camera guidance of the teacher; 0: the teacher's default (1 is off)."""
    pairs: int = 256
    """ODE stage: teacher trajectories generated (once; cached on disk and reused)."""
    pairs_dir: str = ""
    """ODE stage: where the trajectories are cached (empty: RUN/ode_pairs)."""
    generator_every: int = 5
    """DMD: the generator is updated on every k-th step; the critic on every step."""
    critic_lr: float = 2e-6
    """DMD: learning rate of the critic (the generator's is optim.lr)."""
    score_shift: float = 10.0
    """DMD: noise levels of the real / fake scores are shift(u), u ~ U(0, 1), with this shift."""
    score_timesteps: tuple[float, float] = (20.0, 980.0)
    """DMD: the range the scores' timesteps are clamped to."""
    cache_window: int = -1
    """DMD rollout: chunks of softmax keys / values the student's stream cache keeps besides
    the sink (the bounded streaming window); -1: every chunk (full cache)."""
    cache_sink: int = -1
    """DMD rollout: latent frames from the start kept for ever with a window; -1: the first chunk."""
    grad_frames: int = 0
    """DMD rollout: only chunks that reach into the last `grad_frames` latent frames get gradients
    (earlier chunks only fill the cache, so long clips fit in memory; Self-Forcing uses 21);
    0: every chunk."""


@dataclass
class OptimConfig:
    lr: float = 3e-4
    weight_decay: float = 0.01
    """AdamW decay, on weight matrices only (not on biases, norms, tables)."""
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 200
    """Linear learning-rate warm-up; constant afterwards (runs are extended by resuming)."""
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True
    """Use decay min(ema_decay, (1 + n) / (10 + n)) at update n, so early EMA follows the model."""


@dataclass
class RunConfig:
    steps: int = 1000
    """Total optimizer steps (a resumed run continues up to this number); 0 exports the start
    as it is (e.g. a `linear_shortcut` VAE as fitted)."""
    batch_size: int = 4
    """Clips per step on each process (used when `global_batch_size` is 0)."""
    global_batch_size: int = 0
    """Clips per optimizer step over all processes; each of W processes takes
    global_batch_size / W (which must divide). With it a config means the same training on any
    number of processes, and a run can resume on another number. 0: batch_size x W."""
    seed: int = 0
    device: str = ""
    """Torch device; empty: cuda (this rank's GPU) when available, else cpu."""
    precision: str = "bf16"
    """"bf16": bfloat16 autocast on CUDA (CPU always runs float32); "fp32"."""
    grad_checkpointing: bool = False
    tf32: bool = True
    """Allow TensorFloat-32 matmuls / convolutions for the float32 parts on CUDA (the GDN
    recurrences, the VAE); much faster on recent GPUs at ~1e-3 relative precision."""
    strategy: str = "ddp"
    """Multi-process wrapping under torchrun: "ddp" or "fsdp" (FSDP2 fully_shard per block)."""
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    time_budget_s: float = 0.0
    """Stop (with a checkpoint) before this many seconds since start; 0: no limit."""
    budget_reserve_s: float = 30.0
    """Seconds kept free at the end of the budget for saving and exporting."""
    progress: bool = True
    """Show a progress bar (rank 0)."""

    def local_batch(self, world_size: int) -> int:
        """Clips per step on each of `world_size` processes."""
        if not self.global_batch_size:
            return self.batch_size
        if self.global_batch_size % world_size:
            raise UserInputError(
                f"run.global_batch_size {self.global_batch_size} does not split over {world_size} processes"
            )
        return self.global_batch_size // world_size


@dataclass
class ExportConfig:
    """Generation defaults written into the exported model folder's `model.json`."""

    steps: int = 24
    camera_cfg: float = 1.0
    fps: float = 16.0
    context_sigma: float = 0.0
    """Noise level streamed chunks are committed at (`GenerationSettings.context_sigma`)."""
    dtype: str = "float16"
    """Storage dtype of the exported weights: "float16", "bfloat16" or "float32"."""


@dataclass
class TrainConfig:
    stage: str = "dit"
    data: DataConfig = field(default_factory=DataConfig)
    dit: DiTModelConfig = field(default_factory=DiTModelConfig)
    vae: VAEModelConfig = field(default_factory=VAEModelConfig)
    objective: FlowMatchingConfig = field(default_factory=FlowMatchingConfig)
    vae_loss: VAELossConfig = field(default_factory=VAELossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def validate(self) -> TrainConfig:
        """Raise `UserInputError` naming every impossible setting; returns self."""
        d, o, r, p = self.data, self.objective, self.run, self.data.procedural
        checks = {
            f"stage must be one of {STAGES}": self.stage in STAGES,
            "data.source must be 'procedural' or 'folder'": d.source in ("procedural", "folder"),
            "data.folder.root is required for a folder source": d.source != "folder" or bool(d.folder.root),
            "data.num_frames must be >= 2": d.num_frames >= 2,
            "data.height and data.width must be positive": d.height > 0 and d.width > 0,
            "data.workers must be >= 0": d.workers >= 0,
            "data.pool_size must be 0 or >= the global batch": d.pool_size == 0
            or d.pool_size >= (r.global_batch_size or r.batch_size),
            "data.fresh_per_step must be >= 1 without a pool, in [0, data.pool_size] with one": (
                d.fresh_per_step >= 1 if d.pool_size == 0 else 0 <= d.fresh_per_step <= d.pool_size
            ),
            "data.procedural.kinds must not be empty": len(p.kinds) > 0,
            "data.procedural.trajectory_weights must be 3 non-negative numbers, not all 0": len(
                p.trajectory_weights
            ) == 3 and min(p.trajectory_weights) >= 0 and sum(p.trajectory_weights) > 0,
            "data.procedural.fov_deg must be an increasing pair in (0, 180)": _pair(p.fov_deg, 0, 180),
            "data.procedural.speed_scale must be an increasing pair of positive numbers": _pair(
                p.speed_scale, 0, float("inf")
            ),
            "data.procedural.supersample must be >= 1": p.supersample >= 1,
            "data.folder.frame_strides must be positive integers": len(d.folder.frame_strides) > 0
            and all(s >= 1 for s in d.folder.frame_strides),
            "data.folder.max_zoom must be >= 1": d.folder.max_zoom >= 1,
            "objective.sigma_shift must be > 0": o.sigma_shift > 0,
            "objective.logit_std must be > 0": o.logit_std > 0,
            "objective.chunk_size must be >= 1": o.chunk_size >= 1,
            "objective.channel_weight_power must lie in [0, 2]": 0 <= o.channel_weight_power <= 2,
            "objective probabilities must lie in [0, 1]": all(
                0 <= v <= 1 for v in (o.frame_noise_prob, o.text_dropout, o.camera_dropout, o.causal_prob)
            ),
            "dit.init_map_clips must be >= 0": self.dit.init_map_clips >= 0,
            "optim.lr must be > 0": self.optim.lr > 0,
            "optim.ema_decay must lie in [0, 1)": 0 <= self.optim.ema_decay < 1,
            "optim.warmup_steps must be >= 0": self.optim.warmup_steps >= 0,
            "run.steps must be >= 0": r.steps >= 0,
            "vae_loss.latent_noise must be >= 0": self.vae_loss.latent_noise >= 0,
            "run.batch_size must be >= 1": r.batch_size >= 1,
            "run.global_batch_size must be >= 0": r.global_batch_size >= 0,
            f"run.precision must be one of {PRECISIONS}": r.precision in PRECISIONS,
            f"run.strategy must be one of {STRATEGIES}": r.strategy in STRATEGIES,
            "run.log_every and run.checkpoint_every must be >= 1": r.log_every >= 1 and r.checkpoint_every >= 1,
            "run.keep_checkpoints must be >= 1": r.keep_checkpoints >= 1,
            "run.time_budget_s must be >= 0": r.time_budget_s >= 0,
            "export.dtype must be float16, bfloat16 or float32": self.export.dtype
            in ("float16", "bfloat16", "float32"),
            "export.steps must be >= 1": self.export.steps >= 1,
        }
        if self.stage in DISTILL_STAGES:
            checks.update(_distill_checks(self.distill))
        bad = [message for message, ok in checks.items() if not ok]
        if bad:
            raise UserInputError("invalid training config: " + "; ".join(bad))
        return self


def _distill_checks(d: DistillConfig) -> dict[str, bool]:
    t = d.timesteps
    low, high = d.score_timesteps
    return {
        "distill.teacher (a model folder) is required": bool(d.teacher),
        "distill.timesteps must start at 1000 and decrease strictly, staying > 0": len(t) >= 1
        and t[0] == 1000 and all(a > b for a, b in zip(t, t[1:])) and t[-1] > 0,
        "distill.teacher_steps must be >= 0": d.teacher_steps >= 0,
        "distill.teacher_cfg and distill.teacher_camera_cfg must be >= 0": min(d.teacher_cfg, d.teacher_camera_cfg)
        >= 0,
        "distill.pairs must be >= 1": d.pairs >= 1,
        "distill.generator_every must be >= 1": d.generator_every >= 1,
        "distill.critic_lr must be > 0": d.critic_lr > 0,
        "distill.score_shift must be > 0": d.score_shift > 0,
        "distill.score_timesteps must be an increasing pair in [0, 1000]": 0 <= low < high <= 1000,
        "distill.cache_window and distill.cache_sink must be >= -1": min(d.cache_window, d.cache_sink) >= -1,
        "distill.grad_frames must be >= 0": d.grad_frames >= 0,
    }


def _pair(values: tuple[float, ...], low: float, high: float) -> bool:
    return len(values) == 2 and low < values[0] <= values[1] < high


# ---- JSON <-> dataclasses -------------------------------------------------------------------


def to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain JSON-able dict of a config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """A copy of `base` (default: the defaults) with the fields in `values` replaced, recursively."""
    return _merge(base or TrainConfig(), values, "config")


# Optimizer settings of SANA-WM's distillation recipe (NVlabs/Sana longsana configs: lr, betas);
# no warm-up and EMA decay 0.99 (Self-Forcing's EMA weight) are ours.
_DISTILL_OPTIM = {
    "distill-ode": {"lr": 2e-5, "warmup_steps": 0, "ema_decay": 0.99},
    "distill-dmd": {"lr": 1e-5, "betas": (0.0, 0.999), "warmup_steps": 0, "ema_decay": 0.99},
}


def stage_defaults(stage: str) -> TrainConfig:
    """The defaults of a stage (what `sanawm train --stage STAGE` starts from): the dataclass
    defaults, with the published optimizer settings for the distillation stages."""
    config = TrainConfig(stage=stage)
    if stage in _DISTILL_OPTIM:
        config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, **_DISTILL_OPTIM[stage]))
    return config


def load_config(path: str | Path, base: TrainConfig | None = None) -> TrainConfig:
    """Read a JSON config file on top of `base`."""
    path = Path(path)
    values = read_json_object(path, "config file")
    return _merge(base or TrainConfig(), values, str(path))


def _merge(obj: Any, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise UserInputError(f"{where}: expected an object, got {type(values).__name__}")
    hints = get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserInputError(f"{where}: unknown field(s) {unknown}; known: {sorted(names)}")
    changes = {}
    for name, value in values.items():
        current = getattr(obj, name)
        key = f"{where}.{name}"
        if dataclasses.is_dataclass(current):
            changes[name] = _merge(current, value, key)
        else:
            changes[name] = _coerce(value, hints[name], key)
    return dataclasses.replace(obj, **changes)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check a JSON value against a field's type hint; lists become tuples for tuple fields."""
    origin = get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserInputError(f"{where}: expected a list, got {value!r}")
        args = get_args(hint)
        item = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, item, where) for v in value)
        if len(value) != len(args):
            raise UserInputError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, t, where) for v, t in zip(value, args))
    if origin is dict:
        if not isinstance(value, dict):
            raise UserInputError(f"{where}: expected an object, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise UserInputError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserInputError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserInputError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserInputError(f"{where}: expected a string, got {value!r}")
        return value
    return value


__all__ = [
    "DataConfig",
    "DiTModelConfig",
    "DistillConfig",
    "ExportConfig",
    "FlowMatchingConfig",
    "FolderConfig",
    "OptimConfig",
    "ProceduralConfig",
    "RunConfig",
    "TrainConfig",
    "VAELossConfig",
    "VAEModelConfig",
    "from_dict",
    "load_config",
    "stage_defaults",
    "to_dict",
]
