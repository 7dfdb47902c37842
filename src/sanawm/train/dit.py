"""The DiT stage: train a `SanaWMTransformer` on the latents of a frozen VAE.

Each clip is encoded once when it enters the feed (normalised VAE latents, plus the raymap and
chunk-Plücker rays from `sanawm.camera.pack_camera` at the VAE's strides, exactly as the
sampler packs them). A step then draws noise levels (`sanawm.train.objective`), optionally
drops the camera (whole step) or the text (per clip), runs the model bidirectionally or
chunk-causally and regresses the velocity on the noised frames.

The trained EMA weights are exported as a model folder (`RUN/model`) with the VAE.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from sanawm.camera import DEFAULT_FOV_DEG, pack_camera
from sanawm.errors import UserInputError
from sanawm.modeldir import GenerationSettings
from sanawm.train.config import TrainConfig
from sanawm.train.data import ClipBatch, make_source
from sanawm.train.distributed import DistContext
from sanawm.train.export import ema_transformer, export_model_dir
from sanawm.train.feed import ClipFeed, Encoded, randn_rows, sample_generators
from sanawm.train.objective import (
    NoisePlan,
    channel_loss_weights,
    flow_matching_loss,
    noise_latents,
    sample_noise_plan,
    text_inputs,
)
from sanawm.train.loop import StandardSteps

MODEL_DIR = "model"


def _load_frozen_vae(path: str, device: torch.device):
    from sanawm.vae import load_vae

    if not path:
        raise UserInputError("the DiT stage needs a trained VAE: set dit.vae (--vae DIR)")
    vae = load_vae(path).to(device).eval()
    vae.requires_grad_(False)
    return vae


def dit_config(config: TrainConfig, vae):
    """The DiT's `SanaWMConfig`: the preset plus overrides, with the latent and Plücker widths
    taken from the VAE unless the overrides set them (and then they must agree)."""
    from sanawm.model import preset_config

    overrides = dict(config.dit.overrides)
    if isinstance(overrides.get("softmax_blocks"), list):
        overrides["softmax_blocks"] = tuple(overrides["softmax_blocks"])
    implied = {"in_channels": vae.latent_channels, "plucker_channels": 6 * vae.temporal_stride}
    for name, value in implied.items():
        if overrides.setdefault(name, value) != value:
            raise UserInputError(f"dit.overrides.{name} = {overrides[name]} does not fit the VAE (needs {value})")
    return preset_config(config.dit.preset, **overrides)


def copy_transformer_weights(model: nn.Module, path: str, mismatch: str) -> None:
    """Copy the weights of a model folder or transformer folder into `model`; a folder whose
    transformer config differs is a `UserInputError` reading `mismatch`."""
    from sanawm.modeldir import load_transformer, read_model_dir

    source = Path(path)
    if (source / "model.json").is_file():
        source = read_model_dir(source).components["transformer"]
    other = load_transformer(source)
    if other.config != model.config:
        raise UserInputError(mismatch)
    model.load_state_dict(other.state_dict())


def fit_latent_map(new: torch.Tensor, old: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An affine map with orthonormal rows from one VAE's latents to another's, token by token.

    new (B, C_new, T, H, W) and old (B, C_old, T, H, W), C_old <= C_new: the normalised latents
    of the same clips through two VAEs of equal strides. Fits the least-squares map
    `A z_new + b ~ z_old` and returns its nearest matrix with orthonormal rows (the polar
    factor, `Q = U V^T` for `A = U S V^T`), (C_old, C_new), and the offset `a` (C_old,) that is
    best for `Q`, both float64.

    Why not `A` itself: a flow-matching DiT reads `(1 - s) z + s noise` and writes `noise - z`.
    Q keeps standard normal noise standard normal (Q noise ~ N(0, I)), and its inverse on the
    subspace, Q^T, amplifies nothing; A shrinks the noise along the old directions that the new
    latents explain poorly, and its pseudo-inverse blows the old DiT's errors up along them
    (`scripts/check_warm_start.py` measures both starts).
    """
    x = new.movedim(1, -1).reshape(-1, new.shape[1]).double().cpu()
    y = old.movedim(1, -1).reshape(-1, old.shape[1]).double().cpu()
    assert y.shape[1] <= x.shape[1], f"the old latents ({y.shape[1]} channels) must not be wider than the new ({x.shape[1]})"
    A = least_squares_map(x, y)[0]
    u, _, vh = torch.linalg.svd(A, full_matrices=False)
    Q = u @ vh
    return Q, y.mean(0) - Q @ x.mean(0)


def least_squares_map(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`A` (C_y, C_x) and `b` (C_y,) minimising |x A^T + b - y|^2 over the rows of x (N, C_x), y (N, C_y)."""
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    solution = torch.linalg.lstsq(design, y, driver="gelsd").solution  # (C_x + 1, C_y)
    return solution[:-1].T.contiguous(), solution[-1].clone()


@torch.no_grad()
def map_latent_layers(model: nn.Module, old: nn.Module, A: torch.Tensor | None, a: torch.Tensor | None) -> None:
    """Start `model` from `old`, a DiT of the same architecture trained on other latents.

    Every weight except the two that touch latents is copied. With a map `A`, `a` from new
    latents to old ones (`fit_latent_map`: A has orthonormal rows), the patch embedding reads
    `A z + a`, what `old` was trained to read, and the final layer writes `A^+ (v_old + a)`:
    since v = noise - data, the new data is `A^+ (z_old - a)` and the new noise projected on
    the directions `old` knows is `A^+ A noise`. In/out compose to the projector `A^+ A`, so the
    copied model denoises the part of the new latents that the old ones match and predicts no
    velocity for the rest until training fills it in. `A` None: those two layers keep
    `model`'s own (fresh) initialisation.
    """
    latent_layers = ("x_embedder.proj.weight", "x_embedder.proj.bias", "final_layer.linear.weight",
                     "final_layer.linear.bias")  # fmt: skip
    state = {k: v for k, v in old.state_dict().items() if k not in latent_layers}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert sorted(missing) == sorted(latent_layers) and not unexpected, (missing, unexpected)
    if A is None:
        return
    embed, final = model.x_embedder.proj, model.final_layer.linear
    w_in = old.x_embedder.proj.weight.flatten(1).double()  # (hidden, C_old)
    A, a = A.to(w_in), a.to(w_in)
    embed.weight.copy_((w_in @ A).view_as(embed.weight))
    embed.bias.copy_(w_in @ a + old.x_embedder.proj.bias.double())
    pinv = torch.linalg.pinv(A)  # (C_new, C_old)
    final.weight.copy_(pinv @ old.final_layer.linear.weight.double())
    final.bias.copy_(pinv @ (old.final_layer.linear.bias.double() + a))


def warm_start(model: nn.Module, path: str, vae, config: TrainConfig, device: torch.device) -> str:
    """Copy the DiT of `path` (a model folder or a transformer folder) into `model`; returns how.

    Same architecture: every weight. Another latent width (the model folder's VAE has other
    channels but the same strides as `vae`): `map_latent_layers`, the orthogonal map fitted on
    `dit.init_map_clips` training clips encoded by both VAEs (0: latent layers re-initialised).
    """
    from sanawm.modeldir import load_transformer, read_model_dir

    mismatch = f"dit.init_from {path}: its transformer config differs from the one being trained"
    source, spec = Path(path), None
    if (source / "model.json").is_file():
        spec = read_model_dir(source)
        source = spec.components["transformer"]
    other = load_transformer(source)
    if other.config == model.config:
        model.load_state_dict(other.state_dict())
        return "copied"
    if dataclasses.replace(other.config, in_channels=model.config.in_channels) != model.config:
        raise UserInputError(mismatch)
    if spec is None or spec.components.get("vae") is None:
        raise UserInputError(f"{mismatch} in its latent channels; give its model folder (with its VAE) to map them")
    if other.config.in_channels > model.config.in_channels:
        raise UserInputError(f"{mismatch}: it reads {other.config.in_channels} latent channels, more than the "
                             f"{model.config.in_channels} of this VAE; a warm start maps onto wider latents only")  # fmt: skip
    clips = config.dit.init_map_clips
    if clips == 0:
        map_latent_layers(model, other, None, None)
        return f"blocks copied, latent layers re-initialised ({other.config.in_channels} -> {model.config.in_channels} channels)"
    old_vae = _load_frozen_vae(str(spec.components["vae"]), device)
    if old_vae.strides != vae.strides:
        raise UserInputError(f"{mismatch}: its VAE has strides {old_vae.strides}, this one {vae.strides}")
    source_clips = make_source(config.data, config.run.seed + 3)
    new_latents, old_latents = [], []
    for start in range(0, clips, 8):
        batch = source_clips.finish([source_clips.prepare(d) for d in range(start, min(clips, start + 8))], device)
        pixels = batch.pixels()
        new_latents.append(vae.encode(pixels.to(vae.dtype)).float().cpu())
        old_latents.append(old_vae.encode(pixels.to(old_vae.dtype)).float().cpu())
    A, a = fit_latent_map(torch.cat(new_latents), torch.cat(old_latents))
    map_latent_layers(model, other, A, a)
    del old_vae
    return f"blocks copied, latent layers mapped orthogonally, fitted on {clips} clips ({other.config.in_channels} -> {model.config.in_channels} channels)"


def freeze_unused_parameters(model: nn.Module, vae_strides: tuple[int, int, int]) -> list[str]:
    """Stop training the parameters no forward pass reads, and return their names.

    The checkpoint format keeps a few such tensors (the release's `raymap_embedder`, replaced by
    the chunk-Plücker path; the GDN gates that softmax blocks carry but do not use). Without
    gradients they would stall DDP / FSDP gradient reduction and AdamW would never update
    them anyway. Found with one tiny forward / backward that uses every input (camera, text).
    """
    stride_t, stride_h, stride_w = vae_strides
    device = next(model.parameters()).device
    c2w = torch.eye(4).expand(stride_t + 1, 4, 4)
    raymap, plucker = pack_camera(c2w, [1.0, 1.0, 0.5, 0.5], (stride_h, stride_w), vae_strides)
    cfg = model.config
    text, mask = text_inputs(model.null_text(), 1)
    latents = torch.zeros(1, cfg.in_channels, 2, 1, 1, device=device)
    out = model(latents, torch.tensor([[0.0, 500.0]], device=device), text, mask,
                raymap[None].to(device), plucker[None].to(device))  # fmt: skip
    out.float().square().sum().backward()
    unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    for name, p in model.named_parameters():
        p.grad = None
        if name in unused:
            p.requires_grad_(False)
    return unused


@torch.no_grad()
def encode_clips(batch: ClipBatch, vae, text_len: int, device: torch.device) -> Encoded:
    """Clips -> normalised latents, raymap and chunk-Plücker rays (and text, if any), as the
    sampler packs them; texts are padded to `text_len` so every batch (and pool slot) agrees."""
    latents = vae.encode(batch.pixels().to(vae.dtype)).float()
    raymap, plucker = pack_camera(batch.c2w.cpu(), batch.intrinsics.cpu(), batch.image_size, vae.strides)
    out = {"latents": latents, "raymap": raymap.to(device), "plucker": plucker.to(device)}
    if batch.text_states is not None:
        pad = text_len - batch.text_states.shape[1]
        if pad < 0:
            raise UserInputError(f"captions have {batch.text_states.shape[1]} tokens, the model takes {text_len}")
        out.update(
            text_states=torch.nn.functional.pad(batch.text_states, (0, 0, 0, pad)),
            text_mask=torch.nn.functional.pad(batch.text_mask, (0, pad)),
            text_present=batch.text_present,
        )
    return out


class DiTSteps(StandardSteps):
    """The DiT stage's step on a model already built: which blocks FSDP2 shards, the
    flow-matching loss on an `Encoded` batch, AdamW (`StandardSteps`). `DiTTask` adds the VAE,
    the clip feed and the export; alone it trains on batches made elsewhere (synthetic inputs
    of the 2.6 B preset in `scripts/gpu_fsdp_step.py`)."""

    name = "dit"

    def __init__(self, config: TrainConfig, module: nn.Module, channel_weights: torch.Tensor | None = None) -> None:
        self.config = config
        self.module = module
        self.channel_weights = channel_weights  # (C,) or None (`channel_loss_weights`)
        self.find_unused_parameters = config.objective.camera_dropout > 0

    def shard_units(self) -> list[nn.Module]:
        return list(self.module.blocks)

    def loss(
        self, model: nn.Module, batch: Encoded, shared: torch.Generator, local: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        obj = self.config.objective
        latents = batch["latents"]
        T = latents.shape[2]
        causal = bool(torch.rand((), generator=shared) < obj.causal_prob)
        camera = bool(torch.rand((), generator=shared) >= obj.camera_dropout)
        # Each sample draws its noise levels, noise and text dropout from its own generator
        # (seeded by its global batch position), so the draws do not depend on how the global
        # batch is split over processes.
        gens = sample_generators(batch["sample_seed"], latents.device)
        plans = [sample_noise_plan(1, T, obj, g, causal=causal) for g in gens]
        plan = NoisePlan(torch.cat([p.sigmas for p in plans]), plans[0].chunk_size)
        noise = randn_rows(latents.shape, gens)
        noisy, target = noise_latents(latents, noise, plan.sigmas)
        keys = ("text_states", "text_mask", "text_present")
        texts = [
            text_inputs(self.module.null_text(), 1, *(batch[k][i : i + 1] if k in batch else None for k in keys),
                        dropout=obj.text_dropout, generator=g)
            for i, g in enumerate(gens)
        ]  # fmt: skip
        text, mask = torch.cat([t for t, _ in texts]), torch.cat([m for _, m in texts])
        prediction = model(
            noisy, plan.timesteps, text, mask,
            batch["raymap"] if camera else None, batch["plucker"] if camera else None,
            chunk_size=plan.chunk_size,
        )  # fmt: skip
        loss = flow_matching_loss(
            prediction, target, plan.loss_mask, per_sample=True, channel_weights=self.channel_weights
        )
        return loss, {"causal_fraction": float(causal), "camera_fraction": float(camera)}


class DiTTask(DiTSteps):
    """The `Task` of the DiT stage (see `sanawm.train.loop`)."""

    def __init__(self, config: TrainConfig, ctx: DistContext) -> None:
        from sanawm.model import SanaWMTransformer

        self.ctx = ctx
        data = config.data
        self.vae = _load_frozen_vae(config.dit.vae, ctx.device)
        self.vae.check_num_frames(data.num_frames)
        self.vae.check_image_size(data.height, data.width)
        self.model_config = dit_config(config, self.vae)

        torch.manual_seed(config.run.seed)  # identical initial weights on every rank
        model = SanaWMTransformer(self.model_config, device=ctx.device)
        model.init_weights()
        self.warm_start = ""
        if config.dit.init_from:
            self.warm_start = warm_start(model, config.dit.init_from, self.vae, config, ctx.device)
        self.frozen = freeze_unused_parameters(model, self.vae.strides)
        super().__init__(config, model, self._channel_weights(config.objective.channel_weight_power))

        source = make_source(data, config.run.seed)
        self.feed = ClipFeed(
            source, self.encode,
            batch_size=config.run.local_batch(ctx.world_size), seed=config.run.seed,
            device=ctx.device, pool_size=data.pool_size,
            fresh_per_step=data.fresh_per_step, workers=data.workers, rank=ctx.rank, world_size=ctx.world_size,
        )  # fmt: skip

    def _channel_weights(self, power: float) -> torch.Tensor | None:
        """The loss weights of the latent channels (`objective.channel_weight_power`), from the
        compact VAE's latent statistics; None weighs them alike."""
        from sanawm.vae import CompactVAE

        if power == 0.0:
            return None
        if not isinstance(self.vae, CompactVAE):
            raise UserInputError("objective.channel_weight_power needs a compact VAE (its per-channel latent std)")
        return channel_loss_weights(self.vae.latents_std, power)

    def encode(self, batch: ClipBatch) -> Encoded:
        return encode_clips(batch, self.vae, self.module.config.max_text_len, self.ctx.device)

    def generation_settings(self) -> GenerationSettings:
        cfg = self.config
        fov = DEFAULT_FOV_DEG
        if cfg.data.source == "procedural":
            low, high = cfg.data.procedural.fov_deg
            fov = 0.5 * (low + high)
        return GenerationSettings(
            height=cfg.data.height,
            width=cfg.data.width,
            fps=cfg.export.fps,
            fov_deg=fov,
            steps=cfg.export.steps,
            flow_shift=cfg.objective.sigma_shift,
            cfg=1.0,
            camera_cfg=cfg.export.camera_cfg,
            chunk_size=cfg.objective.chunk_size,
            context_sigma=cfg.export.context_sigma,
        )

    def finish(self, run_dir: Path, model_state: dict, ema_state: dict) -> dict:
        from sanawm.vae import load_vae

        transformer = ema_transformer(self.model_config, model_state, ema_state, torch.float32)
        vae = load_vae(self.config.dit.vae)
        out = export_model_dir(
            Path(run_dir) / MODEL_DIR, transformer, vae, self.generation_settings(),
            vae_source=self.config.dit.vae, dtype=self.config.export.dtype,
        )  # fmt: skip
        params = sum(p.numel() for p in transformer.parameters())
        result = {"model_dir": str(out), "dit_parameters": params}
        if self.warm_start:
            result["warm_start"] = self.warm_start
        return result


def describe(model_config) -> str:
    """One line: depth, width, heads, softmax blocks, parameter count."""
    from sanawm.model import SanaWMTransformer

    n = sum(p.numel() for p in SanaWMTransformer(model_config, device="meta").parameters())
    cfg = dataclasses.asdict(model_config)
    return (f"depth {cfg['depth']}, hidden {cfg['hidden_size']} ({model_config.num_heads} heads of {cfg['head_dim']}), "
            f"softmax blocks {list(cfg['softmax_blocks'])}, {n / 1e6:.2f} M parameters")  # fmt: skip


__all__ = [
    "DiTSteps",
    "DiTTask",
    "describe",
    "dit_config",
    "encode_clips",
    "fit_latent_map",
    "freeze_unused_parameters",
    "least_squares_map",
    "map_latent_layers",
    "warm_start",
]
