"""Writing a trained DiT (its EMA weights) and its VAE as a model folder (`sanawm.modeldir`).

The folder loads with `sanawm generate --model DIR` / `WorldModel.load(DIR)`. Weights are
stored in `dtype` (float16 by default, half the size; they are loaded back in the model's
compute dtype). The compact VAE's latent statistics stay float32: they define the latent
space the DiT was trained in.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from sanawm.modeldir import GenerationSettings, save_transformer, write_model_json
from sanawm.text import TextEncoderConfig

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def ema_transformer(config, model_state: dict[str, torch.Tensor], ema_state: dict[str, torch.Tensor], dtype: torch.dtype):
    """A CPU `SanaWMTransformer` holding `model_state` with its parameters replaced by the EMA."""
    from sanawm.model import SanaWMTransformer

    state = dict(model_state)
    state.update(ema_state)
    model = SanaWMTransformer(config, device="meta")
    model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, assign=True)
    return model.eval()


def export_model_dir(
    directory: str | Path,
    transformer,
    vae,
    settings: GenerationSettings,
    vae_source: str | Path,
    dtype: str = "float16",
    text: tuple[dict[str, str], TextEncoderConfig] | None = None,
) -> Path:
    """Write `directory` = transformer/ + vae/ + model.json.

    A compact VAE (anything with `save`) is written with its parameters in `dtype`; another
    VAE (the LTX-2 adapter) is referenced by the absolute path of `vae_source` instead of copied.
    `text`: (absolute "text_encoder" / "tokenizer" paths, their config) of a model with a text
    encoder, referenced as they are.
    """
    directory = Path(directory)
    save_transformer(transformer.to(DTYPES[dtype]), directory / "transformer")
    components: dict[str, str | None] = {}
    if hasattr(vae, "save"):
        stored = copy.deepcopy(vae).cpu()
        for p in stored.parameters():
            p.data = p.data.to(DTYPES[dtype])
        stored.save(directory / "vae")
    else:
        components["vae"] = str(Path(vae_source).resolve())
    if text is not None:
        components.update(text[0])
    write_model_json(directory, settings, components, text[1] if text is not None else None)
    return directory


__all__ = ["DTYPES", "ema_transformer", "export_model_dir"]
