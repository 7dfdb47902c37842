"""Distillation stage 2 (`--stage distill-dmd`): self-forcing distribution matching (DMD).

Three transformers of the teacher's architecture:
- the generator: the streaming student (from `distill.student_init`, typically the ODE stage's
  model folder), rolled out chunk by chunk through its own stream cache (`sanawm.train.rollout`);
- the real score: the frozen teacher with its guidance baked in (`GuidedScore`, bidirectional);
- the fake score (critic): initialised from the teacher (or `distill.critic_init`), trained to
  denoise the generator's samples.

A step (conditioning = the first frame, cameras and text of training clips; no other data):
1. every `distill.generator_every`-th step, the generator: roll out with gradients at one
   random exit step (shared by all chunks); noise the result at one level per clip,
   sigma = shift(u) (u ~ U(0, 1), shift `score_shift`, timestep clamped to `score_timesteps`);
   the real and fake clean estimates give the DMD gradient
       g = (x0_fake - x0_real) / mean|x - x0_real|
   (per clip, over its noised frames) and the loss 0.5 * MSE(x, (x - g).detach()), whose
   gradient with respect to the sample x is g / N: it lowers KL(generator || teacher) along the
   difference of the two scores (`dmd_gradient`);
2. every step, the critic: a rollout without gradients, noised the same way, and the flow
   matching loss of the critic's velocity toward `noise - x`.
Frame 0 (the input image) is clean everywhere and out of every loss.

One AdamW with two parameter groups (generator: optim.lr; critic: distill.critic_lr; both
optim.betas, (0, 0.999) in the recipe); each update steps only the module that has gradients.
The EMA follows the generator. Under torchrun, "fsdp" shards both trainable transformers
(FSDP2, every block); "ddp" keeps full replicas and averages gradients after each backward
(an explicit all-reduce: the rollout calls the generator several times with gradients before
one backward, which DDP's reducer does not allow).

The exit steps come from the step's shared generator (the same on every rank); every other draw
(rollout noise, score levels, score noise) from the clip's own generator, seeded by its position
in the global batch, and both losses are means per clip, then over the clips: a global batch
trains alike on any number of processes (tests/test_train_distill_world_size.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from sanawm.modeldir import save_transformer
from sanawm.sampling.schedule import FlowMatchingSchedule
from sanawm.train.config import TrainConfig
from sanawm.train.data import make_source
from sanawm.train.distributed import DistContext, average_gradients, wrap
from sanawm.train.feed import ClipFeed, Encoded, Generators, randn_rows, sample_generators
from sanawm.train.loop import StepResult, clip_gradients, param_groups
from sanawm.train.objective import flow_matching_loss
from sanawm.train.rollout import rollout
from sanawm.train.teacher import (
    Condition,
    GuidedScore,
    cache_bounds,
    condition_from_batch,
    export_student,
    load_teacher,
    teacher_guidance,
    trainable_copy,
)

MODEL_DIR = "model"
CRITIC_DIR = "critic"


def score_sigmas(batch: int, shift: float, bounds: tuple[float, float], generator: Generators) -> Tensor:
    """(B,) noise levels of the scores: shift(u), u ~ U(0, 1), timestep clamped to `bounds`
    (a list of per-clip generators: clip i's u from generator i)."""
    if isinstance(generator, torch.Generator):
        u = torch.rand(batch, generator=generator, device=generator.device, dtype=torch.float64)
    else:
        assert len(generator) == batch, f"{len(generator)} generators for {batch} clips"
        u = torch.cat([torch.rand(1, generator=g, device=g.device, dtype=torch.float64) for g in generator])
    t = FlowMatchingSchedule.timestep(FlowMatchingSchedule(shift).shift_sigma(u)).clamp(*bounds)
    return (t / 1000.0).float()


def noised(latents: Tensor, noise: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """Latents (B, C, T, h, w) noised at one level per clip, frame 0 kept clean: returns the
    noisy latents and the per-frame levels (B, T)."""
    B, _, T = latents.shape[:3]
    levels = sigma[:, None].expand(B, T).clone()
    levels[:, 0] = 0.0
    return FlowMatchingSchedule.add_noise(latents, noise, levels[:, None, :, None, None]), levels


def dmd_gradient(generated: Tensor, fake_x0: Tensor, real_x0: Tensor, mask: Tensor) -> Tensor:
    """(x0_fake - x0_real) / mean|generated - x0_real|, the mean per clip over the frames in
    `mask` (B, T); non-finite values become 0."""
    weight = mask.to(generated.dtype)[:, None, :, None, None].expand_as(generated)
    scale = ((generated - real_x0).abs() * weight).sum(dim=(1, 2, 3, 4)) / weight.sum(dim=(1, 2, 3, 4)).clamp_min(1)
    return torch.nan_to_num((fake_x0 - real_x0) / scale.view(-1, 1, 1, 1, 1))


def dmd_loss(generated: Tensor, gradient: Tensor, mask: Tensor) -> Tensor:
    """0.5 * MSE(generated, (generated - gradient).detach()) over the frames in `mask` (float64),
    within each clip and then over the clips: its gradient with respect to a clip's `generated`
    is its `gradient` / (B x the number of elements in its mask). Per clip, the mean over W
    processes of their losses is the loss of the whole batch (as for `flow_matching_loss`)."""
    x = generated.double()
    target = (x - gradient.double()).detach()
    weight = mask.double()[:, None, :, None, None].expand_as(x)
    per_clip = ((x - target).square() * weight).sum(dim=(1, 2, 3, 4)) / weight.sum(dim=(1, 2, 3, 4)).clamp_min(1)
    return 0.5 * per_clip.mean()


@dataclass
class DMDObjective:
    """The two losses of a DMD step over three transformers (see module doc); also what
    `scripts/bench_dmd.py` times. `sigmas`: the student's levels (ending at 0); `guidance`:
    (text, camera) scales of the real score; window / sink: the student's stream cache."""

    generator: nn.Module
    critic: nn.Module
    real: nn.Module
    guidance: tuple[float, float]
    sigmas: Tensor
    chunk_size: int
    score_shift: float = 10.0
    score_timesteps: tuple[float, float] = (20.0, 980.0)
    window: int | None = None
    sink: int | None = None
    grad_frames: int = 0
    """Only the chunks that reach into the last `grad_frames` latent frames get gradients; 0: all."""
    exit_index: int | None = None
    """A fixed exit step (benchmarks time the longest rollout); None: random per rollout."""

    def rollout(self, cond: Condition, shared: torch.Generator, local: Generators, grad: bool) -> Tensor:
        """A rollout of the generator with a random exit step (drawn from `shared`: the same on
        every rank) and noise from `local` (the training step passes one generator per clip,
        seeded by its global batch position: `feed.sample_generators`)."""
        exit_index = int(torch.randint(0, len(self.sigmas) - 1, (), generator=shared))
        if self.exit_index is not None:
            exit_index = self.exit_index
        grad_from = max(0, cond.num_frames - self.grad_frames) if self.grad_frames else 0
        return rollout(self.generator, cond, self.sigmas, exit_index, self.chunk_size, local, grad=grad,
                       window=self.window, sink=self.sink, grad_from=grad_from)  # fmt: skip

    def _noised(self, latents: Tensor, local: Generators) -> tuple[Tensor, Tensor, Tensor]:
        sigma = score_sigmas(latents.shape[0], self.score_shift, self.score_timesteps, local).to(latents.device)
        noise = randn_rows(tuple(latents.shape), local).to(latents.device)
        noisy, levels = noised(latents, noise, sigma)
        return noisy, levels, noise

    def generator_loss(
        self, cond: Condition, shared: torch.Generator, local: Generators
    ) -> tuple[Tensor, dict[str, float]]:
        """The DMD loss of one rollout (gradients reach the generator through its exit steps)."""
        generated = self.rollout(cond, shared, local, grad=True)
        with torch.no_grad():
            noisy, levels, _ = self._noised(generated.detach(), local)
            timestep = FlowMatchingSchedule.timestep(levels)
            sigma = levels[:, None, :, None, None]
            fake_v = self.critic(noisy, timestep, cond.text, cond.text_mask, cond.raymap, cond.plucker)
            real_v = GuidedScore(self.real, cond, *self.guidance).velocity(noisy, timestep, 0, cond.num_frames)
            fake_x0 = FlowMatchingSchedule.x0_from_velocity(noisy, fake_v, sigma)
            real_x0 = FlowMatchingSchedule.x0_from_velocity(noisy, real_v, sigma)
            mask = levels > 0
            gradient = dmd_gradient(generated.detach(), fake_x0, real_x0, mask)
        loss = dmd_loss(generated, gradient, mask)
        return loss, {"dmd_gradient_abs": float(gradient.abs().mean()), "score_timestep": float(timestep[:, -1].mean())}

    def critic_loss(self, cond: Condition, shared: torch.Generator, local: Generators) -> Tensor:
        """Flow matching of the critic on the generator's samples (per clip, then over clips)."""
        with torch.no_grad():
            generated = self.rollout(cond, shared, local, grad=False)
            noisy, levels, noise = self._noised(generated, local)
        velocity = self.critic(
            noisy, FlowMatchingSchedule.timestep(levels), cond.text, cond.text_mask, cond.raymap, cond.plucker
        )
        target = FlowMatchingSchedule.velocity_target(generated, noise)
        return flow_matching_loss(velocity, target, (levels > 0).float(), per_sample=True)


class DMDModules(nn.Module):
    """The two trained transformers, in one module for checkpoints and the optimizer."""

    def __init__(self, generator: nn.Module, critic: nn.Module) -> None:
        super().__init__()
        self.generator = generator
        self.critic = critic


class DMDTask:
    """The `Task` of the DMD stage (see `sanawm.train.loop` and the module doc)."""

    name = "distill-dmd"

    def __init__(self, config: TrainConfig, ctx: DistContext) -> None:
        from sanawm.train.dit import encode_clips

        self.config = config
        self.ctx = ctx
        d = config.distill
        self.teacher = load_teacher(d.teacher, ctx.device)
        chunk_size = self.teacher.settings.chunk_size
        window, sink = cache_bounds(config, chunk_size)
        torch.manual_seed(config.run.seed)
        generator = trainable_copy(self.teacher, d.student_init, "distill.student_init", ctx.device)
        critic = trainable_copy(self.teacher, d.critic_init, "distill.critic_init", ctx.device)
        self.module = DMDModules(generator, critic)
        self.objective = DMDObjective(
            generator, critic, self.teacher.model, teacher_guidance(config, self.teacher),
            FlowMatchingSchedule.sigmas_from_timesteps(d.timesteps), chunk_size, d.score_shift, d.score_timesteps,
            window, sink, d.grad_frames,
        )  # fmt: skip
        self.find_unused_parameters = False
        self.strategy = "none"
        text_len = self.teacher.model.config.max_text_len
        vae = self.teacher.vae
        self.feed = ClipFeed(
            make_source(config.data, config.run.seed), lambda clips: encode_clips(clips, vae, text_len, ctx.device),
            batch_size=config.run.local_batch(ctx.world_size), seed=config.run.seed,
            device=ctx.device, pool_size=config.data.pool_size,
            fresh_per_step=config.data.fresh_per_step, workers=config.data.workers, rank=ctx.rank,
            world_size=ctx.world_size,
        )  # fmt: skip

    # ---- the Task pieces ---------------------------------------------------------------------

    def shard_units(self) -> list[nn.Module]:
        return [*self.module.generator.blocks, *self.module.critic.blocks]

    def wrap_module(self, ctx: DistContext, strategy: str) -> nn.Module:
        if ctx.distributed:
            self.strategy = strategy
            if strategy == "fsdp":  # each transformer is its own FSDP2 root (they are called separately)
                for m in (self.module.generator, self.module.critic):
                    wrap(m, ctx, "fsdp", list(m.blocks), False)
        return self.module

    def make_optimizer(self, config: TrainConfig) -> torch.optim.Optimizer:
        o = config.optim
        groups = param_groups(self.module.generator, o.weight_decay)
        for group in groups:
            group["lr"] = o.lr
        for group in param_groups(self.module.critic, o.weight_decay):
            group["lr"] = config.distill.critic_lr
            groups.append(group)
        return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, foreach=True)

    def ema_target(self) -> nn.Module:
        return self.module.generator

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Encoded, shared: torch.Generator,
        local: torch.Generator, step: int, autocast: bool, grad_clip: float,
    ) -> StepResult:  # fmt: skip
        cond = condition_from_batch(batch, self.module.generator)
        # Every draw of a clip (rollout noise, score levels and noise of both updates) comes from
        # its own generator, seeded by its global batch position: the step does not depend on how
        # the global batch is split over the processes (`local` is unused).
        gens = sample_generators(batch["sample_seed"], self.ctx.device)
        extras: dict[str, float] = {}
        generator_finite = True
        update_generator = step % self.config.distill.generator_every == 0
        if update_generator:
            with self._autocast(autocast):
                loss, stats = self.objective.generator_loss(cond, shared, gens)
            loss.backward()
            norm, generator_finite = self._update(self.module.generator, optimizer, grad_clip)
            extras.update(generator_loss=float(loss.detach()), generator_grad_norm=norm, **stats)
        with self._autocast(autocast):
            critic_loss = self.objective.critic_loss(cond, shared, gens)
        critic_loss.backward()
        norm, critic_finite = self._update(self.module.critic, optimizer, grad_clip)
        finite = critic_finite and generator_finite
        return StepResult(critic_loss.detach(), norm, finite, update_generator and generator_finite, extras)

    def finish(self, run_dir: Path, model_state: dict, ema_state: dict) -> dict:
        """`RUN/model`: the generator's EMA as a few-step model folder; `RUN/critic`: the critic
        (float32 transformer folder, `distill.critic_init` of a following DMD stage)."""
        from sanawm.model import SanaWMTransformer

        def part(prefix: str) -> dict[str, Tensor]:
            return {k[len(prefix) :]: v for k, v in model_state.items() if k.startswith(prefix)}

        out = export_student(Path(run_dir) / MODEL_DIR, self.config, self.teacher, part("generator."), ema_state)
        critic = SanaWMTransformer(self.teacher.model.config, device="meta")
        critic.load_state_dict({k: v.float() for k, v in part("critic.").items()}, assign=True)
        save_transformer(critic, Path(run_dir) / CRITIC_DIR)
        return {"model_dir": str(out), "steps": len(self.config.distill.timesteps)}

    # ---- helpers -----------------------------------------------------------------------------

    def _autocast(self, enabled: bool):
        return torch.autocast(self.ctx.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _update(self, module: nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float) -> tuple[float, bool]:
        """Average (ddp), clip and apply the gradients of `module` (the only one that has any)."""
        if self.strategy == "ddp":
            average_gradients(module, self.ctx)
        norm, finite = clip_gradients((p for p in module.parameters() if p.grad is not None), grad_clip)
        if finite:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return norm, finite


__all__ = ["DMDModules", "DMDObjective", "DMDTask", "dmd_gradient", "dmd_loss", "noised", "score_sigmas"]
