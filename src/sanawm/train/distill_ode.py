"""Distillation stage 1 (`--stage distill-ode`): regress the teacher's ODE trajectories.

Pairs: the teacher (any model folder) generates clips chunk-causally, exactly as it streams
(chunk by chunk through its stream caches, with its guidance), from the first frame and cameras
of training clips and seeded noise. The Euler grid is the teacher's own schedule with the
student's levels added, so every trajectory passes through them; the noisy latents at the
student's levels and the clean result are kept: S + 1 snapshots (S = number of student
timesteps). Pair i is a function of (teacher, settings, seed, i) (and, to float rounding, of the
batch it was made in); each is written to `PAIRS/pair_NNNNNNN.safetensors` when done (ranks
share the work), so an interrupted generation resumes where it stopped and later runs reuse
the folder (`pairs.json` records the settings it was made with; a mismatch is an error).

Training: each step takes random pairs; every chunk gets one random snapshot (its noisy latents
at that level, or the clean ones), latent frame 0 is always the clean image; the student runs
one chunk-causal forward (each chunk sees the earlier chunks' snapshots) and its clean estimate
`x - sigma v` is regressed on the teacher's clean result (MSE over each clip's noised frames,
then the mean over clips). Position k of the global batch of step s takes its pair and its
snapshots from seeds of (seed, s, k) and lives on process k mod W, so a global batch trains
alike on any number of processes (tests/test_train_distill_world_size.py).
The result is a model folder (`RUN/model`) that samples with the student's few steps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from sanawm.chunks import chunk_spans, chunk_starts_for
from sanawm.errors import UserInputError
from sanawm.sampling.schedule import FlowMatchingSchedule
from sanawm.train.config import TrainConfig, to_dict
from sanawm.train.distributed import DistContext
from sanawm.train.feed import PAIR_STREAM, SAMPLE_STREAM, Encoded, Generators, position_seed, sample_generators
from sanawm.train.loop import StandardSteps
from sanawm.train.objective import flow_matching_loss
from sanawm.train.teacher import (
    Condition,
    GuidedScore,
    Teacher,
    condition_from_batch,
    export_student,
    load_teacher,
    teacher_guidance,
    trainable_copy,
)

PAIRS_DIR = "ode_pairs"
PAIRS_JSON = "pairs.json"
MODEL_DIR = "model"
_LEVEL_TOLERANCE = 1e-6


def teacher_grid(teacher_sigmas: Tensor, student_sigmas: Tensor) -> tuple[Tensor, list[int]]:
    """The teacher's levels merged with the student's (decreasing, float32, ending at 0) and the
    position of every student level (and the final 0) in the merged grid."""
    levels = sorted({float(s) for s in teacher_sigmas.tolist()} | {float(s) for s in student_sigmas.tolist()},
                    reverse=True)  # fmt: skip
    merged: list[float] = []
    for s in levels:  # levels closer than the tolerance are one level (the student's value wins)
        if merged and merged[-1] - s < _LEVEL_TOLERANCE:
            continue
        merged.append(s)
    grid = torch.tensor(merged, dtype=torch.float32)
    for s in student_sigmas.tolist():
        grid[int(torch.argmin((grid - s).abs()))] = s
    positions = [int(torch.argmin((grid - s).abs())) for s in student_sigmas.tolist()]
    return grid, positions


@torch.no_grad()
def teacher_trajectories(
    guided: GuidedScore, cond: Condition, noise: Tensor, grid: Tensor, keep: list[int], chunk_size: int
) -> Tensor:
    """Stream the teacher over the clip with Euler steps on `grid`; returns the latents at the
    grid positions `keep`, (B, len(keep), C, T, h, w) float32. Frame 0 is the clean image."""
    B, C, T = noise.shape[:3]
    device = noise.device
    out = []
    for start, stop in chunk_spans(chunk_starts_for(T, chunk_size), T):
        n = stop - start
        x = noise[:, :, start:stop].clone()
        pinned = torch.zeros(n, dtype=torch.bool, device=device)
        if start == 0:
            x[:, :, :1] = cond.first
            pinned[0] = True
        snaps = [x] if 0 in keep else []
        for i in range(len(grid) - 1):
            sigma = torch.where(pinned, torch.zeros(()), grid[i]).to(device)  # (n,)
            sigma_next = torch.where(pinned, torch.zeros(()), grid[i + 1]).to(device)
            velocity = guided.velocity(x, FlowMatchingSchedule.timestep(sigma).expand(B, n), start, stop)
            x = FlowMatchingSchedule.euler_step(x, velocity, sigma.view(1, 1, n, 1, 1), sigma_next.view(1, 1, n, 1, 1))
            if i + 1 in keep:
                snaps.append(x)
        out.append(torch.stack(snaps, dim=1))
        if stop < T:
            guided.commit(x, start, stop)
    return torch.cat(out, dim=3)


def _pair_noise(shape: tuple[int, ...], seed: int, index: int) -> Tensor:
    """The start noise of pair `index` (CPU, from (seed, index) only)."""
    state = np.random.SeedSequence([seed, 2, index]).generate_state(1, dtype=np.uint64)[0] >> 1
    return torch.randn(shape, generator=torch.Generator().manual_seed(int(state)))


def _pair_path(folder: Path, index: int) -> Path:
    return folder / f"pair_{index:07d}.safetensors"


def _pairs_manifest(config: TrainConfig, teacher: Teacher, grid: Tensor) -> dict:
    d = config.distill
    return {
        "teacher": str(Path(d.teacher).resolve()),
        "timesteps": list(d.timesteps),
        "grid": [float(s) for s in grid],
        "guidance": list(teacher_guidance(config, teacher)),
        "chunk_size": teacher.settings.chunk_size,
        # What the clips are; not how they are loaded (workers, pool).
        "data": {k: v for k, v in to_dict(config)["data"].items() if k not in ("workers", "pool_size", "fresh_per_step")},
        "seed": config.run.seed,
    }


def generate_pairs(config: TrainConfig, teacher: Teacher, ctx: DistContext, folder: Path) -> None:
    """Make the missing pairs 0 .. distill.pairs - 1 in `folder` (see module doc); every rank
    calls this and makes the indices i = rank (mod world size)."""
    from sanawm.train.data import make_source
    from sanawm.train.dit import encode_clips

    d, s = config.distill, teacher.settings
    student = FlowMatchingSchedule.sigmas_from_timesteps(d.timesteps)
    grid, keep = teacher_grid(FlowMatchingSchedule(s.flow_shift).sampling_sigmas(d.teacher_steps or s.steps), student)
    manifest = _pairs_manifest(config, teacher, grid)
    path = folder / PAIRS_JSON
    if path.is_file() and json.loads(path.read_text()) != manifest:
        raise UserInputError(f"{folder} holds ODE pairs made with other settings (see {path}); choose another folder")
    ctx.barrier()
    if ctx.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest, indent=2) + "\n")
    ctx.barrier()

    # Fixed groups of run.batch_size pairs per rank, redone whole when any pair is missing, so
    # a resumed generation writes exactly what an uninterrupted one would have.
    mine = list(range(ctx.rank, d.pairs, ctx.world_size))
    size = config.run.local_batch(ctx.world_size)
    groups = [mine[k : k + size] for k in range(0, len(mine), size)]
    source = make_source(config.data, config.run.seed)
    cfg, camera_cfg = teacher_guidance(config, teacher)
    text_len = teacher.model.config.max_text_len
    for indices in groups:
        if all(_pair_path(folder, i).is_file() for i in indices):
            continue
        batch = encode_clips(source.finish([source.prepare(i) for i in indices], ctx.device),
                             teacher.vae, text_len, ctx.device)  # fmt: skip
        cond = condition_from_batch(batch, teacher.model)
        noise = torch.stack([_pair_noise(batch["latents"].shape[1:], config.run.seed, i) for i in indices])
        noise = noise.to(ctx.device)
        guided = GuidedScore(teacher.model, cond, cfg, camera_cfg, streaming=True)
        snaps = teacher_trajectories(guided, cond, noise, grid, keep, s.chunk_size)
        for row, index in enumerate(indices):
            tensors = {
                "snapshots": snaps[row], "raymap": batch["raymap"][row], "plucker": batch["plucker"][row],
                "first": batch["latents"][row, :, :1],
            }  # fmt: skip
            if "text_states" in batch:
                tensors.update(text_states=batch["text_states"][row], text_mask=batch["text_mask"][row],
                               text_present=batch["text_present"][row])  # fmt: skip
            final = _pair_path(folder, index)
            tmp = final.with_suffix(".tmp")
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
            os.replace(tmp, final)  # complete files only: an interrupted run redoes this pair
    ctx.barrier()


class PairFeed:
    """Batches of ODE pairs: position k of step s's global batch (on rank k mod W, like
    `feed.ClipFeed`) takes a uniformly drawn pair and a `sample_seed`, both from seeds of
    (seed, s, k) only: the same pairs and draws on any number of processes."""

    def __init__(
        self, folder: Path, count: int, batch_size: int, device: torch.device, rank: int = 0, world_size: int = 1,
        seed: int = 0,
    ) -> None:  # fmt: skip
        self.folder = folder
        self.count = count
        self.batch_size = batch_size
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.clips_loaded = 0

    def batch(self, step: int, generator: torch.Generator | None = None) -> Encoded:
        """`generator` is unused (see the class doc)."""
        positions = [j * self.world_size + self.rank for j in range(self.batch_size)]
        picks = [int(np.random.default_rng(position_seed(self.seed, step, k, PAIR_STREAM)).integers(self.count))
                 for k in positions]  # fmt: skip
        items = [load_file(str(_pair_path(self.folder, i))) for i in picks]
        self.clips_loaded += len(items)
        batch = {k: torch.stack([it[k] for it in items]).to(self.device) for k in items[0]}
        seeds = [position_seed(self.seed, step, k, SAMPLE_STREAM) for k in positions]
        return {**batch, "sample_seed": torch.tensor(seeds, dtype=torch.int64)}

    def close(self) -> None:
        pass


def pick_snapshots(
    snapshots: Tensor, sigmas: Tensor, chunk_size: int, generator: Generators
) -> tuple[Tensor, Tensor]:
    """One random snapshot per chunk (clean for frame 0): the latents (B, C, T, h, w) and their
    levels (B, T). `snapshots` (B, K, C, T, h, w) are at `sigmas` (K,), the last clean. A list of
    per-clip generators draws clip i's picks from generator i alone."""
    B, K, C, T, h, w = snapshots.shape
    starts = chunk_starts_for(T, chunk_size)
    device = snapshots.device
    if isinstance(generator, torch.Generator):
        per_chunk = torch.randint(0, K, (B, len(starts)), generator=generator, device=generator.device)
    else:
        assert len(generator) == B, f"{len(generator)} generators for {B} clips"
        per_chunk = torch.cat([torch.randint(0, K, (1, len(starts)), generator=g, device=g.device) for g in generator])
    per_chunk = per_chunk.to(device)
    chunk_of = torch.cat([torch.full((b - a,), i) for i, (a, b) in enumerate(chunk_spans(starts, T))]).to(device)
    index = per_chunk[:, chunk_of]  # (B, T)
    index[:, 0] = K - 1
    gather = index.view(B, 1, 1, T, 1, 1).expand(B, 1, C, T, h, w)
    latents = torch.gather(snapshots, 1, gather).squeeze(1)
    return latents, sigmas.to(device)[index]


def x0_regression_loss(
    velocity: Tensor, noisy: Tensor, sigmas: Tensor, clean: Tensor, per_sample: bool = False
) -> Tensor:
    """MSE between the clean estimate `noisy - sigma velocity` and `clean`, over the frames with
    sigma > 0 (inputs (B, C, T, h, w), sigmas (B, T)): over the whole batch at once, or
    (`per_sample`, what the stage trains with) within each clip and then over the clips."""
    estimate = FlowMatchingSchedule.x0_from_velocity(noisy, velocity, sigmas[:, None, :, None, None])
    return flow_matching_loss(estimate, clean, (sigmas > 0).float(), per_sample=per_sample)


class ODETask(StandardSteps):
    """The `Task` of the ODE stage (see `sanawm.train.loop`)."""

    name = "distill-ode"

    def __init__(self, config: TrainConfig, ctx: DistContext, run_dir: Path) -> None:
        self.config = config
        self.ctx = ctx
        self.teacher = load_teacher(config.distill.teacher, ctx.device)
        self.chunk_size = self.teacher.settings.chunk_size
        self.sigmas = FlowMatchingSchedule.sigmas_from_timesteps(config.distill.timesteps).to(ctx.device)
        folder = Path(config.distill.pairs_dir) if config.distill.pairs_dir else Path(run_dir) / PAIRS_DIR
        generate_pairs(config, self.teacher, ctx, folder)
        torch.manual_seed(config.run.seed)
        self.module = trainable_copy(self.teacher, config.distill.student_init, "distill.student_init", ctx.device)
        self.teacher.model = self.teacher.model.to("meta")  # only its config and the VAE are needed now
        self.find_unused_parameters = False
        self.feed = PairFeed(folder, config.distill.pairs, config.run.local_batch(ctx.world_size), ctx.device,
                             ctx.rank, ctx.world_size, config.run.seed)  # fmt: skip

    def shard_units(self) -> list[nn.Module]:
        return list(self.module.blocks)

    def loss(
        self, model: nn.Module, batch: Encoded, shared: torch.Generator, local: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        snapshots = batch["snapshots"].float()
        # Per-clip snapshot picks and a per-clip loss mean: W processes with B / W clips each
        # compute the gradients of one process with B clips (`local` is unused).
        gens = sample_generators(batch["sample_seed"], snapshots.device)
        noisy, sigmas = pick_snapshots(snapshots, self.sigmas, self.chunk_size, gens)
        cond = condition_from_batch(batch, self.module)
        velocity = model(
            noisy, FlowMatchingSchedule.timestep(sigmas), cond.text, cond.text_mask, cond.raymap, cond.plucker,
            chunk_size=self.chunk_size,
        )  # fmt: skip
        loss = x0_regression_loss(velocity, noisy, sigmas, snapshots[:, -1], per_sample=True)
        return loss, {"noised_fraction": float((sigmas > 0).float().mean())}

    def finish(self, run_dir: Path, model_state: dict, ema_state: dict) -> dict:
        out = export_student(Path(run_dir) / MODEL_DIR, self.config, self.teacher, model_state, ema_state)
        return {"model_dir": str(out), "steps": len(self.config.distill.timesteps)}


__all__ = [
    "ODETask",
    "PairFeed",
    "generate_pairs",
    "pick_snapshots",
    "teacher_grid",
    "teacher_trajectories",
    "x0_regression_loss",
]
