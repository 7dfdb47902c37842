"""Loading the refiner's DiT: diffusers folders, an optional LoRA merged into the weights, and
block offloading for GPUs that cannot hold the whole model.

The transformer is diffusers' `LTX2VideoTransformer3DModel`; a `SanaWMLTX2RefinerTransformer3DModel`
folder (diffusers' SANA-WM refiner) has the same config and state-dict keys and loads into it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sanawm.errors import UserInputError

LORA_ADAPTER = "sanawm_refiner_lora"


def load_refiner_transformer(path: str | Path, dtype: torch.dtype = torch.float32):
    """The LTX-2 DiT from a local diffusers folder (config.json + safetensors)."""
    from diffusers import LTX2VideoTransformer3DModel

    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserInputError(f"refiner transformer folder not found (no config.json): {path}")
    try:
        model = LTX2VideoTransformer3DModel.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True)
    except (OSError, ValueError) as err:
        raise UserInputError(f"cannot load the refiner transformer from {path}: {err}") from None
    return model.eval()


def merge_lora(transformer, lora: str | Path | dict, scale: float = 1.0) -> None:
    """Merge a LoRA (a safetensors file or a state dict, in diffusers' format or the original
    LTX-2 `diffusion_model.` format) into the transformer's weights, in place; afterwards the
    model has plain layers again and runs at the base model's cost. Needs `peft`."""
    try:
        import peft  # noqa: F401
    except ImportError:
        raise UserInputError("merging a LoRA needs peft: pip install 'sanawm[lora]'") from None
    from diffusers.loaders.lora_pipeline import LTX2LoraLoaderMixin

    if not isinstance(lora, dict):
        lora = Path(lora)
        if not lora.is_file():
            raise UserInputError(f"LoRA file not found: {lora}")
        lora = str(lora)
    state = LTX2LoraLoaderMixin.lora_state_dict(lora)
    state = {k: v for k, v in state.items() if k.startswith("transformer.")}
    if not state:
        raise UserInputError("the LoRA holds no transformer weights")
    transformer.load_lora_adapter(state, prefix="transformer", adapter_name=LORA_ADAPTER)
    transformer.fuse_lora(lora_scale=scale, adapter_names=[LORA_ADAPTER])
    transformer.unload_lora()


def enable_block_offload(transformer, device: torch.device | str) -> None:
    """Keep the weights on the CPU and stream them to `device` block by block as the forward
    pass reaches them (diffusers' group offloading, the next block copied on a side stream
    while the current one computes). The transformer must be on the CPU."""
    device = torch.device(device)
    transformer.enable_group_offload(
        onload_device=device,
        offload_device=torch.device("cpu"),
        offload_type="block_level",
        num_blocks_per_group=1,
        use_stream=device.type == "cuda",
    )
