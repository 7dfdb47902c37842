"""Resumable training checkpoints.

    RUN/checkpoints/step_0001000/
        model.safetensors   full (unsharded) float32 state dict of the trained module
        ema.safetensors     full EMA shadows of its trainable parameters
        trainer.pt          optimizer state (full), step, EMA update count, seed, stage, config
    RUN/checkpoints/latest  name of the newest complete checkpoint folder

A checkpoint is written to a temporary folder and renamed when complete, so a run killed while
saving leaves the previous one intact. Every random choice of a run is a function of (seed,
step) and the rank or global batch position (see `sanawm.train.loop` and `sanawm.train.feed`),
so the step *is* the random state: resuming reproduces the uninterrupted run, and for the DiT
and VAE stages (whose draws are per global position) also on another number of processes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sanawm.errors import UserInputError
from sanawm.train.distributed import DistContext
from sanawm.train.ema import EMA

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
TRAINER_FILE = "trainer.pt"


def _options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model: nn.Module, ctx: DistContext) -> dict[str, torch.Tensor]:
    """Unsharded CPU state dict (a collective under FSDP2: call on every rank)."""
    if not ctx.distributed:
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options())


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: EMA,
    ctx: DistContext,
    meta: dict[str, Any],
    keep: int,
) -> Path:
    """Write the checkpoint of `step` (all ranks call this; rank 0 writes) and prune old ones."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    model_state = full_model_state(model, ctx)
    if ctx.distributed:
        optim_state = get_optimizer_state_dict(model, optimizer, options=_options())
    else:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        optim_state = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))
    ema_state = ema.full_state()
    root = Path(run_dir) / CHECKPOINT_DIR
    final = root / f"step_{step:07d}"
    if ctx.is_main:
        tmp = root / f".step_{step:07d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in model_state.items()}, str(tmp / MODEL_FILE))
        save_file({k: v.contiguous() for k, v in ema_state.items()}, str(tmp / EMA_FILE))
        trainer = {"step": step, "ema_updates": ema.updates, "optimizer": optim_state, **meta}
        torch.save(trainer, tmp / TRAINER_FILE)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        pointer = root / f".{LATEST}.tmp"
        pointer.write_text(final.name + "\n")
        os.replace(pointer, root / LATEST)
        for old in sorted(root.glob("step_*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    ctx.barrier()
    return final


def find_checkpoint(run_dir: Path, resume: str) -> Path | None:
    """The checkpoint folder to resume from: `resume` = "latest" (the run's newest; None when
    the run has none yet) or a checkpoint folder path."""
    if resume == LATEST:
        pointer = Path(run_dir) / CHECKPOINT_DIR / LATEST
        if not pointer.is_file():
            return None
        path = pointer.parent / pointer.read_text().strip()
    else:
        path = Path(resume)
    for name in (MODEL_FILE, EMA_FILE, TRAINER_FILE):
        if not (path / name).is_file():
            raise UserInputError(f"not a complete training checkpoint: {path / name} is missing")
    return path


def read_trainer_state(path: Path) -> dict[str, Any]:
    """`trainer.pt` of a checkpoint folder (step, optimizer, seed, stage, config...)."""
    try:
        return torch.load(Path(path) / TRAINER_FILE, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which
        raise UserInputError(f"cannot read {Path(path) / TRAINER_FILE}: {err}") from None


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: EMA, ctx: DistContext
) -> dict[str, Any]:
    """Restore model, optimizer and EMA from a checkpoint folder; returns its trainer state."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    path = Path(path)
    trainer = read_trainer_state(path)
    state = load_file(str(path / MODEL_FILE))
    if ctx.distributed:
        set_model_state_dict(model, state, options=_options())
    else:
        _load_plain(model, state, path / MODEL_FILE)
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # strict=False: a parameter that has had no gradient yet (its branch dropped in every step
    # so far) has no optimizer state, in the checkpoint as in the running optimizer.
    set_optimizer_state_dict(
        model, optimizer, trainer["optimizer"], options=StateDictOptions(full_state_dict=True, strict=False)
    )
    ema.load_full_state(load_file(str(path / EMA_FILE)), trainer["ema_updates"])
    return trainer


def _load_plain(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise UserInputError(
            f"{source} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shape {wrong[:3]}"
        )
    model.load_state_dict(state)


__all__ = ["find_checkpoint", "full_model_state", "load_checkpoint", "read_trainer_state", "save_checkpoint"]
