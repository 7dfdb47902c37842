"""What both distillation stages share: the frozen teacher, the conditioning, guided scores, export.

- `load_teacher(folder, device)`: a model folder's transformer (float32, frozen), VAE and
  generation settings. Any sanawm model folder can teach.
- `Condition`: what a batch of clips conditions on (the input image's latent, text, cameras),
  built from the DiT stage's clip encoding (`sanawm.train.dit.encode_clips`).
- `GuidedScore`: a model's guided velocity for B clips, over the whole clip (bidirectional) or
  chunk by chunk through stream caches (one per guidance branch, as the sampler keeps them).
  Guidance combines velocities (`sanawm.sampling.combine_guidance`); since the clean estimate
  `x - sigma v` is affine in v, this is the same guidance in x0 space.
- `new_cache`: the model's stream cache, bounded to a sink + window when asked.
- `export_student`: a distilled student as a model folder that samples with its few steps,
  no guidance passes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from sanawm.modeldir import GenerationSettings, ModelDirSpec, load_transformer, read_model_dir
from sanawm.sampling import combine_guidance
from sanawm.train.config import TrainConfig
from sanawm.train.feed import Encoded
from sanawm.train.objective import text_inputs


@dataclass
class Teacher:
    model: nn.Module
    """The frozen transformer (float32, eval)."""
    vae: nn.Module
    spec: ModelDirSpec

    @property
    def settings(self) -> GenerationSettings:
        return self.spec.settings


def load_teacher(folder: str, device: torch.device) -> Teacher:
    """Load the model folder `folder` as a frozen teacher on `device`."""
    from sanawm.vae import load_vae

    spec = read_model_dir(folder)
    model = load_transformer(spec.components["transformer"], dtype=torch.float32).to(device).eval()
    model.requires_grad_(False)
    vae = load_vae(spec.components["vae"]).to(device).eval()
    vae.requires_grad_(False)
    return Teacher(model, vae, spec)


def trainable_copy(teacher: Teacher, init_from: str, what: str, device: torch.device) -> nn.Module:
    """A trainable transformer of the teacher's architecture, holding the weights of `init_from`
    (a model or transformer folder), else the teacher's. Parameters no forward reads are frozen."""
    from sanawm.model import SanaWMTransformer
    from sanawm.train.dit import copy_transformer_weights, freeze_unused_parameters

    model = SanaWMTransformer(teacher.model.config, device=device)
    model.load_state_dict(teacher.model.state_dict())
    if init_from:
        mismatch = f"{what} {init_from}: its transformer config differs from the teacher's"
        copy_transformer_weights(model, init_from, mismatch)
    model.requires_grad_(True)
    freeze_unused_parameters(model, teacher.vae.strides)
    return model.train()


@dataclass
class Condition:
    """What B clips condition on. first: (B, C, 1, h, w) latent of the input image; text /
    text_mask: (B, L, C_text) / (B, L) (the null text for clips without one); null_text /
    null_mask: the model's null text, the negative of text guidance; raymap (B, T, 20) and
    plucker (B, P, T, h, w): the cameras of all T latent frames."""

    first: Tensor
    text: Tensor
    text_mask: Tensor
    null_text: Tensor
    null_mask: Tensor
    has_text: bool
    raymap: Tensor
    plucker: Tensor

    @property
    def batch(self) -> int:
        return int(self.first.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.raymap.shape[1])

    def camera(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        return self.raymap[:, start:stop], self.plucker[:, :, start:stop]


def condition_from_batch(batch: Encoded, model: nn.Module) -> Condition:
    """The `Condition` of a batch from `encode_clips` (or an ODE pair batch)."""
    B = batch["raymap"].shape[0]
    null = model.null_text()
    text, mask = text_inputs(null, B, batch.get("text_states"), batch.get("text_mask"), batch.get("text_present"))
    null_text, null_mask = text_inputs(null, B)
    first = batch["first"] if "first" in batch else batch["latents"][:, :, :1]
    return Condition(
        first=first.float(), text=text, text_mask=mask, null_text=null_text, null_mask=null_mask,
        has_text="text_states" in batch, raymap=batch["raymap"], plucker=batch["plucker"],
    )  # fmt: skip


def new_cache(model: nn.Module, window: int | None = None, sink: int | None = None):
    """`model.new_stream_cache()`, keeping only a sink + the last `window` chunks of softmax
    keys / values when `window` is given (the bounded streaming cache)."""
    if window is None:
        return model.new_stream_cache()
    return model.new_stream_cache(window=window, sink=sink)


def commit(model: nn.Module, cache, clean: Tensor, text: Tensor, mask: Tensor, raymap, plucker) -> None:
    """Append finished latents to `cache` as clean frames (timestep 0), without gradients.

    Same as `model.commit_to_cache`, but through `model(...)` so FSDP2's hooks gather the
    parameters of a sharded model."""
    zero = torch.zeros(clean.shape[0], clean.shape[2], device=clean.device)
    with torch.no_grad():
        model(clean, zero, text, mask, raymap, plucker, cache=cache, update_cache=True)


class GuidedScore:
    """Guided velocity of `model` for the B clips of `cond` (see module doc).

    Branches: the conditional call, batched with the null text when text guidance is on
    (`cfg` != 1 and the clips have text), and a call without camera inputs when
    `camera_cfg` != 1. With `streaming`, each branch has its own stream cache.
    """

    def __init__(
        self, model: nn.Module, cond: Condition, cfg: float, camera_cfg: float, streaming: bool = False,
        window: int | None = None, sink: int | None = None,
    ) -> None:  # fmt: skip
        self.model = model
        self.cond = cond
        self.cfg = cfg
        self.camera_cfg = camera_cfg
        self.text_guidance = cond.has_text and cfg != 1.0
        self.camera_guidance = camera_cfg != 1.0
        if self.text_guidance:
            self.states = torch.cat([cond.null_text, cond.text])
            self.mask = torch.cat([cond.null_mask, cond.text_mask])
        else:
            self.states, self.mask = cond.text, cond.text_mask
        self.main_cache = new_cache(model, window, sink) if streaming else None
        self.no_camera_cache = new_cache(model, window, sink) if streaming and self.camera_guidance else None

    def _rows(self, t: Tensor) -> Tensor:
        return torch.cat([t, t]) if self.text_guidance else t

    def velocity(self, x: Tensor, timestep: Tensor, start: int, stop: int) -> Tensor:
        """Guided velocity (B, C, t, h, w) for latents x of frames [start, stop), timesteps (B, t)."""
        raymap, plucker = self.cond.camera(start, stop)
        out = self.model(
            self._rows(x), self._rows(timestep), self.states, self.mask, self._rows(raymap), self._rows(plucker),
            cache=self.main_cache,
        ).float()  # fmt: skip
        B = x.shape[0]
        full, no_text = (out[B:], out[:B]) if self.text_guidance else (out, None)
        no_camera = None
        if self.camera_guidance:
            no_camera = self.model(
                x, timestep, self.cond.text, self.cond.text_mask, None, None, cache=self.no_camera_cache
            ).float()
        return combine_guidance(full, no_text, no_camera, self.cfg, self.camera_cfg)

    def commit(self, clean: Tensor, start: int, stop: int) -> None:
        """Append finished latents of frames [start, stop) to every branch's cache."""
        raymap, plucker = self.cond.camera(start, stop)
        r = self._rows
        commit(self.model, self.main_cache, r(clean), self.states, self.mask, r(raymap), r(plucker))
        if self.no_camera_cache is not None:
            commit(self.model, self.no_camera_cache, clean, self.cond.text, self.cond.text_mask, None, None)


def teacher_guidance(config: TrainConfig, teacher: Teacher) -> tuple[float, float]:
    """(text, camera) guidance scales of the teacher: the config's, else the teacher folder's."""
    d, s = config.distill, teacher.settings
    return (d.teacher_cfg or s.cfg), (d.teacher_camera_cfg or s.camera_cfg)


def cache_bounds(config: TrainConfig, chunk_size: int) -> tuple[int | None, int | None]:
    """(window, sink) of the student's stream cache from `distill.cache_window` / `cache_sink`."""
    d = config.distill
    if d.cache_window < 0:
        return None, None
    return d.cache_window, (chunk_size + 1 if d.cache_sink < 0 else d.cache_sink)


def export_student(
    directory: Path, config: TrainConfig, teacher: Teacher, model_state: dict[str, Tensor], ema_state: dict[str, Tensor]
) -> Path:
    """Write the student's EMA weights as a model folder with the teacher's VAE (and text
    encoder), sampling with the student's timesteps, no guidance, streaming by default
    (`GenerationSettings`)."""
    from sanawm.train.export import ema_transformer, export_model_dir

    timesteps = tuple(float(t) for t in config.distill.timesteps)
    settings = dataclasses.replace(
        teacher.settings, height=config.data.height, width=config.data.width,
        steps=len(timesteps), timesteps=timesteps, cfg=1.0, camera_cfg=1.0, mode="streaming",
    )  # fmt: skip
    transformer = ema_transformer(teacher.model.config, model_state, ema_state, torch.float32)
    spec = teacher.spec
    text = None
    if spec.has_text_encoder:
        paths = {name: str(Path(spec.components[name]).resolve()) for name in ("text_encoder", "tokenizer")}
        text = (paths, spec.text)
    return export_model_dir(
        directory, transformer, teacher.vae, settings,
        vae_source=spec.components["vae"], dtype=config.export.dtype, text=text,
    )  # fmt: skip


__all__ = [
    "Condition",
    "GuidedScore",
    "Teacher",
    "cache_bounds",
    "commit",
    "condition_from_batch",
    "export_student",
    "load_teacher",
    "new_cache",
    "teacher_guidance",
    "trainable_copy",
]
