"""Training: the compact VAE and the stage-1 DiT, on procedural worlds or folders of real clips,
and few-step distillation of any model folder into a streaming student.

    from sanawm.train import TrainConfig, train
    cfg = TrainConfig(stage="vae")                  # dataclasses; or load_config("cfg.json")
    train(cfg, "runs/vae")                          # -> runs/vae/vae (VAE with latent stats)
    cfg = TrainConfig(stage="dit"); cfg.dit.vae = "runs/vae/vae"
    train(cfg, "runs/dit", resume="latest")         # -> runs/dit/model (a model folder)
    cfg = TrainConfig(stage="distill-ode"); cfg.distill.teacher = "runs/dit/model"
    train(cfg, "runs/ode")                          # -> runs/ode/model (a 4-step student)

The same entry point runs on 1..N processes under `torchrun` (DDP or FSDP2, `run.strategy`).
Modules: `config` (dataclasses), `data` (clip sources), `feed` (ordered draws, replay pool),
`objective` (flow matching), `ema`, `checkpoint`, `distributed`, `loop` (the shared loop),
`vae` / `dit` (the two stages), `export` (model folders), `embedded` (the bundled model's recipe),
`teacher` / `rollout` / `distill_ode` / `distill_dmd` (distillation).
"""

from __future__ import annotations

from pathlib import Path

from sanawm.train.config import TrainConfig, from_dict, load_config, to_dict
from sanawm.train.loop import RunSummary, format_summary


def train(config: TrainConfig, out: str | Path, resume: str | None = None) -> RunSummary:
    """Run the stage `config.stage` in the run folder `out`.

    `resume`: None (start fresh), "latest" (continue the run in `out` if it has a checkpoint,
    else start fresh) or a checkpoint folder. Under torchrun every process calls this.
    """
    from sanawm.train.distributed import setup
    from sanawm.train.loop import run_task

    config.validate()
    ctx = setup(config.run.device)
    if config.stage == "vae":
        from sanawm.train.vae import VAETask

        task = VAETask(config, ctx)
    elif config.stage == "distill-ode":
        from sanawm.train.distill_ode import ODETask

        task = ODETask(config, ctx, Path(out))
    elif config.stage == "distill-dmd":
        from sanawm.train.distill_dmd import DMDTask

        task = DMDTask(config, ctx)
    else:
        from sanawm.train.dit import DiTTask

        task = DiTTask(config, ctx)
    return run_task(task, config, Path(out), ctx, resume)


__all__ = ["RunSummary", "TrainConfig", "format_summary", "from_dict", "load_config", "to_dict", "train"]
