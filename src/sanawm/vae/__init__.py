"""Video autoencoders: the compact causal VAE of the embedded model and the LTX-2 adapter."""

from __future__ import annotations

from pathlib import Path

from sanawm.errors import UserInputError
from sanawm.jsonfile import read_json_object
from sanawm.vae.base import ChunkDecoder, VideoVAE
from sanawm.vae.compact import CompactVAE, CompactVAEConfig
from sanawm.vae.ltx2 import LTX2VAE

LTX2_CLASS_NAME = "AutoencoderKLLTX2Video"


def load_vae(directory: str | Path) -> VideoVAE:
    """Load the VAE saved in `directory`, recognising its kind from `config.json`.

    A compact VAE folder (written by `CompactVAE.save`) says `"kind": "compact"`; an LTX-2
    folder is a diffusers save of `AutoencoderKLLTX2Video`.
    """
    directory = Path(directory)
    config_path = directory / "config.json"
    config = read_json_object(config_path, "VAE config")
    if config.get("kind") == "compact":
        return CompactVAE.load(directory)
    if config.get("_class_name") == LTX2_CLASS_NAME:
        return LTX2VAE.load(directory)
    raise UserInputError(
        f"{config_path}: unknown VAE (expected \"kind\": \"compact\" or a diffusers {LTX2_CLASS_NAME} config)"
    )


__all__ = [
    "ChunkDecoder",
    "CompactVAE",
    "CompactVAEConfig",
    "LTX2VAE",
    "VideoVAE",
    "load_vae",
]
