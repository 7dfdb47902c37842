"""The training loop shared by both stages (VAE and DiT).

A stage is a `Task`: the module to train, the sub-modules FSDP2 shards, a `ClipFeed`, a loss
function and what to write when training ends. The loop owns everything else: AdamW with
linear warm-up and gradient clipping, bf16 autocast on CUDA, EMA, resumable checkpoints, a
wall-clock budget, a tqdm bar (loss, samples/s) and `metrics.jsonl` in the run folder.

Randomness: each step draws from generators seeded by (seed, step) and (seed, rank, step)
(`step_generators`): the first makes choices every rank must agree on (camera dropout,
chunk-causal steps), the second per-rank noise (stages that do not use per-sample draws). Each
sample of a batch also carries a seed of its global batch position (`feed.sample_generators`),
from which the DiT, VAE and distillation stages draw their noise, so that their training does not
depend on the number of processes the global batch is split over. Nothing else is random after
start-up. The logged loss and extras are means over the ranks.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from sanawm.errors import UserInputError
from sanawm.train.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from sanawm.train.config import TrainConfig, to_dict
from sanawm.train.distributed import DistContext, wrap
from sanawm.train.ema import EMA
from sanawm.train.feed import ClipFeed, Encoded

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"


@dataclass
class StepResult:
    """What one training step did: its loss (detached), gradient norm, whether the update was
    applied (False: non-finite gradients, skipped) and whether the EMA should follow."""

    loss: torch.Tensor
    grad_norm: float
    finite: bool
    update_ema: bool
    extras: dict[str, float]


class Task(Protocol):
    """One training stage (see module doc). `StandardSteps` gives the usual one-module pieces."""

    name: str
    module: nn.Module
    feed: ClipFeed
    find_unused_parameters: bool

    def shard_units(self) -> list[nn.Module]: ...

    def wrap_module(self, ctx: DistContext, strategy: str) -> nn.Module: ...

    def make_optimizer(self, config: TrainConfig) -> torch.optim.Optimizer: ...

    def ema_target(self) -> nn.Module:
        """The module whose parameters the EMA follows (and the exported weights come from)."""
        ...

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Encoded, shared: torch.Generator,
        local: torch.Generator, step: int, autocast: bool, grad_clip: float,
    ) -> StepResult: ...  # fmt: skip

    def finish(self, run_dir: Path, model_state: dict[str, torch.Tensor], ema_state: dict[str, torch.Tensor]) -> dict:
        """Write the stage's result (rank 0 only); returns numbers for the summary."""
        ...


def clip_gradients(parameters: Iterable[nn.Parameter], max_norm: float) -> tuple[float, bool]:
    """Clip the gradients to `max_norm`; returns (total norm, whether it is finite). The answer
    is the same on every rank once the gradients are reduced."""
    grad_norm = torch.nn.utils.clip_grad_norm_(list(parameters), max_norm)
    if hasattr(grad_norm, "full_tensor"):
        grad_norm = grad_norm.full_tensor()
    finite = bool(torch.isfinite(grad_norm))
    return (float(grad_norm) if finite else 0.0), finite


class StandardSteps:
    """The usual Task pieces: `self.module` wrapped by `distributed.wrap`, AdamW on it, and a
    step of `self.loss(...)` -> backward -> clip -> update (skipped on non-finite gradients)."""

    def wrap_module(self, ctx: DistContext, strategy: str) -> nn.Module:
        return wrap(self.module, ctx, strategy, self.shard_units(), self.find_unused_parameters)

    def make_optimizer(self, config: TrainConfig) -> torch.optim.Optimizer:
        o = config.optim
        return torch.optim.AdamW(param_groups(self.module, o.weight_decay), lr=o.lr, betas=o.betas, foreach=True)

    def ema_target(self) -> nn.Module:
        return self.module

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Encoded, shared: torch.Generator,
        local: torch.Generator, step: int, autocast: bool, grad_clip: float,
    ) -> StepResult:  # fmt: skip
        device_type = next(self.module.parameters()).device.type
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
            loss, extras = self.loss(model, batch, shared, local)
        loss.backward()
        grad_norm, finite = clip_gradients(self.module.parameters(), grad_clip)
        if finite:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # a step with inf / nan gradients is skipped
        return StepResult(loss.detach(), grad_norm, finite, finite, extras)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def step_generators(seed: int, rank: int, step: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """(shared, local): a CPU generator equal on every rank and one of this rank on `device`."""
    shared = torch.Generator().manual_seed(_seed(seed, 0, step))
    local = torch.Generator(device=device).manual_seed(_seed(seed, 1, rank, step))
    return shared, local


def enable_gradient_checkpointing(modules: Iterable[nn.Module]) -> None:
    """Recompute each module's activations in the backward pass instead of storing them.

    The module's `forward` is replaced on the instance (its class, parameters and state-dict
    names stay as they are, so checkpoints and FSDP2 sharding are unaffected)."""
    for module in modules:
        module.forward = functools.partial(_checkpointed, module.forward)


def _checkpointed(forward, *args, **kwargs):
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def learning_rate(step: int, base: float, warmup: int) -> float:
    """Linear warm-up from base / warmup to base over `warmup` steps, then constant."""
    if warmup <= 0:
        return base
    return base * min(1.0, (step + 1) / warmup)


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices and conv kernels; none on biases, norm gains
    and modulation tables (decaying those pulls the model towards a different function)."""
    decay, plain = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 and "scale_shift_table" not in name else plain).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


@dataclass
class _Window:
    """Running sums between two log lines."""

    start: float = field(default_factory=time.perf_counter)
    steps: int = 0
    loss: float = 0.0
    grad_norm: float = 0.0
    extras: dict[str, float] = field(default_factory=dict)
    extra_counts: dict[str, int] = field(default_factory=dict)
    """Steps that reported each extra (a stage may report some only on some steps)."""
    clips_at_start: int = 0

    def add(self, loss: float, grad_norm: float, extras: dict[str, float]) -> None:
        self.steps += 1
        self.loss += loss
        self.grad_norm += grad_norm
        for k, v in extras.items():
            self.extras[k] = self.extras.get(k, 0.0) + float(v)
            self.extra_counts[k] = self.extra_counts.get(k, 0) + 1


@dataclass
class RunSummary:
    """What a `train` call did (also printed by the CLI and the embedded-model script)."""

    stage: str
    start_step: int
    end_step: int
    seconds: float
    last_loss: float
    samples_per_s: float
    clips_per_s: float
    """New clips prepared per second (rendering / decoding + encoding), all ranks together."""
    stopped_by_budget: bool
    checkpoint: str
    result: dict = field(default_factory=dict)


def format_summary(summaries: list[RunSummary]) -> str:
    """A small table of `RunSummary` rows: stage, steps, last logged loss, samples/s (model),
    clips/s (new data), minutes, result."""
    lines = [f"{'stage':<6} {'steps':>13} {'loss':>9} {'samples/s':>10} {'clips/s':>8} {'time':>8}  result"]
    for s in summaries:
        steps = f"{s.start_step}->{s.end_step}"
        note = " (time budget)" if s.stopped_by_budget else ""
        result = ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in s.result.items())
        lines.append(
            f"{s.stage:<6} {steps:>13} {s.last_loss:>9.4f} {s.samples_per_s:>10.2f} {s.clips_per_s:>8.2f} "
            f"{s.seconds / 60:>7.1f}m  {result}{note}"
        )
    return "\n".join(lines)


class MetricsLog:
    """Appends one JSON object per line (rank 0); resumed runs append to the same file."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def run_task(task: Task, config: TrainConfig, run_dir: Path, ctx: DistContext, resume: str | None) -> RunSummary:
    """Train `task` in `run_dir` up to `config.run.steps` (or the time budget)."""
    t0 = time.monotonic()
    cfg, run = config, config.run
    run_dir = Path(run_dir)
    if not resume and find_checkpoint(run_dir, "latest") is not None:
        raise UserInputError(f"{run_dir} already holds a training run; resume it or choose another folder")
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(json.dumps(to_dict(config), indent=2) + "\n")

    module = task.module
    if run.grad_checkpointing:
        enable_gradient_checkpointing(task.shard_units())
    model = task.wrap_module(ctx, run.strategy)
    optimizer = task.make_optimizer(cfg)
    base_lrs = [group["lr"] for group in optimizer.param_groups]  # each group warms up to its own
    ema = EMA(task.ema_target(), cfg.optim.ema_decay, cfg.optim.ema_warmup)

    global_batch = run.local_batch(ctx.world_size) * ctx.world_size
    start = 0
    ckpt = find_checkpoint(run_dir, resume) if resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, module, optimizer, ema, ctx)
        if state.get("stage") != task.name:
            raise UserInputError(f"{ckpt} is a {state.get('stage')!r} checkpoint, not {task.name!r}")
        if state.get("seed") != run.seed:
            raise UserInputError(f"{ckpt} was trained with seed {state.get('seed')}, not {run.seed}")
        # The data position of a step is counted in global clips: another global batch would
        # continue elsewhere in the data. (Checkpoints from before this check lack the number.)
        if state.get("global_batch", global_batch) != global_batch:
            raise UserInputError(
                f"{ckpt} was trained with a global batch of {state['global_batch']} clips, this run has "
                f"{global_batch} ({ctx.world_size} process(es)); set run.global_batch_size to resume"
            )
        start = int(state["step"])

    autocast = ctx.device.type == "cuda" and run.precision == "bf16"
    if ctx.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = run.tf32
        torch.backends.cudnn.allow_tf32 = run.tf32
    metrics = MetricsLog(run_dir / METRICS_FILE, ctx.is_main)
    meta = {"stage": task.name, "seed": run.seed, "config": to_dict(config), "global_batch": global_batch,
            "world_size": ctx.world_size}  # fmt: skip
    bar = None
    if ctx.is_main and run.progress:
        from tqdm import tqdm

        bar = tqdm(total=run.steps, initial=start, desc=task.name, dynamic_ncols=True)

    deadline = t0 + run.time_budget_s - run.budget_reserve_s if run.time_budget_s else math.inf
    window = _Window(clips_at_start=task.feed.clips_loaded)
    step = start
    last_loss = float("nan")
    samples_per_s = clips_per_s = 0.0
    step_seconds = 0.0
    saved_at = start if ckpt is not None else -1
    stopped_by_budget = False
    model.train()
    while step < run.steps:
        if ctx.all_agree(time.monotonic() + step_seconds > deadline):
            stopped_by_budget = True
            break
        tic = time.perf_counter()
        lr = learning_rate(step, cfg.optim.lr, cfg.optim.warmup_steps)
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = learning_rate(step, base, cfg.optim.warmup_steps)
        shared, local = step_generators(run.seed, ctx.rank, step, ctx.device)
        batch = task.feed.batch(step, local)
        result = task.train_step(model, optimizer, batch, shared, local, step, autocast, cfg.optim.grad_clip)
        if result.update_ema:
            ema.update()
        step += 1
        window.add(float(result.loss), result.grad_norm, {**result.extras, "skipped_fraction": not result.finite})
        # The budget check assumes the next step takes as long as this one; the first step
        # of a run also fills the replay pool, so it does not count.
        step_seconds = time.perf_counter() - tic if step > start + 1 else 0.0

        if step % run.log_every == 0 or step == run.steps:
            elapsed = time.perf_counter() - window.start
            last_loss = ctx.mean(window.loss / window.steps)
            samples_per_s = window.steps * global_batch / elapsed
            clips_per_s = (task.feed.clips_loaded - window.clips_at_start) * ctx.world_size / elapsed
            record = {
                "stage": task.name, "step": step, "loss": last_loss, "lr": lr,
                "grad_norm": window.grad_norm / window.steps, "samples_per_s": samples_per_s,
                "clips_per_s": clips_per_s, "elapsed_s": time.monotonic() - t0,
                # Each rank's own numbers (e.g. the DMD generator loss of its clips): their mean over
                # the ranks, like the loss (every rank logs the same keys; sorted: the same order).
                **{k: ctx.mean(window.extras[k] / window.extra_counts[k]) for k in sorted(window.extras)},
            }  # fmt: skip
            metrics.write(record)
            if bar is not None:
                bar.set_postfix(loss=f"{last_loss:.4f}", samples_s=f"{samples_per_s:.1f}")
            window = _Window(clips_at_start=task.feed.clips_loaded)
        if bar is not None:
            bar.update(1)
        if step % run.checkpoint_every == 0 and step < run.steps:
            save_checkpoint(run_dir, step, module, optimizer, ema, ctx, meta, run.keep_checkpoints)
            saved_at = step
    if bar is not None:
        bar.close()
    task.feed.close()

    path = run_dir / "checkpoints" / f"step_{step:07d}"
    if saved_at != step:
        path = save_checkpoint(run_dir, step, module, optimizer, ema, ctx, meta, run.keep_checkpoints)
    from sanawm.train.checkpoint import full_model_state

    model_state = full_model_state(module, ctx)
    ema_state = ema.full_state()
    result = task.finish(run_dir, model_state, ema_state) if ctx.is_main else {}
    ctx.barrier()
    return RunSummary(
        stage=task.name,
        start_step=start,
        end_step=step,
        seconds=time.monotonic() - t0,
        last_loss=last_loss,
        samples_per_s=samples_per_s,
        clips_per_s=clips_per_s,
        stopped_by_budget=stopped_by_budget,
        checkpoint=str(path),
        result=result,
    )


__all__ = [
    "MetricsLog",
    "RunSummary",
    "StandardSteps",
    "StepResult",
    "Task",
    "clip_gradients",
    "enable_gradient_checkpointing",
    "learning_rate",
    "param_groups",
    "run_task",
    "step_generators",
]
