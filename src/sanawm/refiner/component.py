"""The `refiner/` component of a model folder: everything stage 2 needs, loaded together.

    refiner/
      refiner.json     optional: RefinerConfig fields (defaults: the released refiner)
      transformer/     diffusers LTX-2 DiT folder (LTX2VideoTransformer3DModel or diffusers'
                       SanaWMLTX2RefinerTransformer3DModel: same config and weights)
      connectors/      diffusers LTX2TextConnectors folder
      text_encoder/    transformers Gemma-3 folder
      tokenizer/       its tokenizer

This is the layout diffusers' `SanaWMLTX2Refiner.save_pretrained` writes (its scheduler/ and
model_index.json are not read), so a saved diffusers refiner can be used as it is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from sanawm.errors import UserInputError
from sanawm.jsonfile import read_json_object
from sanawm.refiner.loading import enable_block_offload, load_refiner_transformer, merge_lora
from sanawm.refiner.refine import DISTILLED_SIGMAS, RefineSettings, StreamingRefiner
from sanawm.refiner.text import MAX_LENGTH, RefinerTextEncoder

CONFIG_FILE = "refiner.json"


@dataclass
class RefinerConfig:
    """`refiner/refiner.json`."""

    block_size: int = 3
    kv_max_frames: int = 11
    sink_size: int = 1
    sigmas: tuple[float, ...] = DISTILLED_SIGMAS
    max_text_length: int = MAX_LENGTH
    """Prompt tokens (left-padded) given to Gemma-3."""
    lora: str | None = None
    """Optional LoRA file (relative to the folder) merged into the DiT when it is loaded."""
    lora_scale: float = 1.0

    def settings(self) -> RefineSettings:
        return RefineSettings(self.block_size, self.kv_max_frames, self.sink_size, tuple(self.sigmas))


class Refiner:
    """Stage 2 as one object: `start(prompt, fps, seed)` gives a `StreamingRefiner` for a clip."""

    def __init__(
        self,
        transformer,
        text_encoder: RefinerTextEncoder,
        config: RefinerConfig,
        device: torch.device | str = "cpu",
        offload: bool = False,
    ) -> None:
        self.transformer = transformer
        self.text_encoder = text_encoder
        self.config = config
        self.settings = config.settings()
        self.device = torch.device(device)
        self.offload = offload

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels)

    @classmethod
    def load(
        cls, directory: str | Path, device: torch.device, dtype: torch.dtype, offload: bool = False
    ) -> Refiner:
        """Load `directory` (see the module doc). With `offload` the weights stay on the CPU:
        the DiT's blocks are streamed to `device` as they run and the text encoder visits
        `device` only while it encodes."""
        root = Path(directory)
        if not root.is_dir():
            raise UserInputError(f"refiner folder not found: {root}")
        config = _read_config(root)
        try:
            config.settings()
        except ValueError as err:
            raise UserInputError(f"{root / CONFIG_FILE}: {err}") from None
        transformer = load_refiner_transformer(root / "transformer", dtype=dtype)
        if config.lora is not None:
            merge_lora(transformer, root / config.lora, config.lora_scale)
        text_encoder = RefinerTextEncoder.load(
            root / "text_encoder", root / "tokenizer", root / "connectors", dtype=dtype, max_length=config.max_text_length
        )
        if text_encoder.connectors.config.caption_channels != transformer.config.caption_channels:
            raise UserInputError(
                f"refiner: the text connectors give {text_encoder.connectors.config.caption_channels}-wide "
                f"states, the transformer expects {transformer.config.caption_channels}"
            )
        if offload:
            enable_block_offload(transformer, device)
        else:
            transformer.to(device)
            text_encoder.model.to(device)
            text_encoder.connectors.to(device)
        return cls(transformer, text_encoder, config, device, offload)

    @torch.no_grad()
    def encode(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        text = self.text_encoder
        if not self.offload:
            return text.encode(prompt)
        text.model.to(self.device)
        text.connectors.to(self.device)
        try:
            return text.encode(prompt)
        finally:
            text.model.to("cpu")
            text.connectors.to("cpu")

    def start(self, prompt: str, fps: float, seed: int) -> StreamingRefiner:
        """A refiner for one clip; its noise comes from a CPU generator seeded with `seed`."""
        embeds, mask = self.encode(prompt)
        return StreamingRefiner(
            self.transformer,
            embeds,
            mask,
            fps=fps,
            generator=torch.Generator().manual_seed(seed),
            settings=self.settings,
        )


def _read_config(root: Path) -> RefinerConfig:
    path = root / CONFIG_FILE
    if not path.is_file():
        return RefinerConfig()
    values = read_json_object(path, "refiner config")
    known = {f.name for f in dataclasses.fields(RefinerConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserInputError(f"{path}: unknown field(s) {unknown}")
    if isinstance(values.get("sigmas"), list):
        values["sigmas"] = tuple(values["sigmas"])
    try:
        return RefinerConfig(**values)
    except TypeError as err:
        raise UserInputError(f"{path}: {err}") from None
