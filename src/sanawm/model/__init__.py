"""The SANA-WM stage-1 diffusion transformer: config, model, streaming cache, loading."""

from sanawm.chunks import chunk_starts_for
from sanawm.model.config import PRESETS, SanaWMConfig, build_preset, preset_config
from sanawm.model.loading import load_official, save_official
from sanawm.model.transformer import SanaWMTransformer, StreamCache

__all__ = [
    "PRESETS",
    "SanaWMConfig",
    "SanaWMTransformer",
    "StreamCache",
    "build_preset",
    "chunk_starts_for",
    "load_official",
    "save_official",
    "preset_config",
]
