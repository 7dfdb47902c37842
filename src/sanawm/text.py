"""Text conditioning: a Gemma-2 encoder adapter, and the no-text path of models trained without text.

The DiT reads text as hidden states `(B, L, caption_channels)` plus a padding mask `(B, L)`.

- `GemmaTextEncoder` (official models): final-layer hidden states of a Gemma-2 model loaded from
  a local folder with its tokenizer. As SANA-WM does it, the prompt is right-padded to `max_length`
  tokens after an optional fixed instruction prefix; with a prefix, the kept rows are the first
  token (BOS) plus the last `max_length - 1` rows, so the prefix conditions the prompt's states
  but is not itself passed on. The negative (unconditional) prompt gets no prefix.
- models trained without text (like the embedded one) take the DiT's own learned null
  embedding with a full mask: `SanaWMTransformer.null_text()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sanawm.errors import UserInputError


@dataclass
class TextEncoderConfig:
    """How prompts are turned into DiT text inputs (stored in a model directory's `model.json`)."""

    max_length: int = 300
    """Rows passed to the DiT per prompt (the model's `max_text_len`)."""
    prompt_prefix: str = ""
    """Instruction text prepended to every prompt before encoding (empty: none)."""


@dataclass
class TextEmbedding:
    """Encoded prompts: `states` (B, L, C) float and `mask` (B, L) int64 (1 = real token)."""

    states: torch.Tensor
    mask: torch.Tensor

    def to(self, device: torch.device | str, dtype: torch.dtype) -> TextEmbedding:
        return TextEmbedding(self.states.to(device, dtype), self.mask.to(device))


class GemmaTextEncoder:
    """Gemma-2 hidden states for prompts, from local `text_encoder/` and `tokenizer/` folders."""

    def __init__(self, model, tokenizer, config: TextEncoderConfig) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        # Gemma tokenizers default to left padding; SANA-WM trained on right-padded prompts.
        self.tokenizer.padding_side = "right"
        self.config = config

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        tokenizer_dir: str | Path,
        config: TextEncoderConfig,
        dtype: torch.dtype = torch.float32,
    ) -> GemmaTextEncoder:
        """Load the encoder (a Gemma-2 base or causal-LM checkpoint) and tokenizer, locally only."""
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError:
            raise UserInputError("the text encoder needs transformers: pip install 'sanawm[official]'") from None
        for what, path in (("text encoder", model_dir), ("tokenizer", tokenizer_dir)):
            if not Path(path).is_dir():
                raise UserInputError(f"{what} folder not found: {path}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        except (OSError, ValueError) as err:
            raise UserInputError(f"cannot load the tokenizer from {tokenizer_dir}: {err}") from None
        try:
            model = AutoModel.from_pretrained(str(model_dir), local_files_only=True, dtype=dtype)
        except (OSError, ValueError) as err:
            raise UserInputError(f"cannot load the text encoder from {model_dir}: {err}") from None
        return cls(model, tokenizer, config)

    def _hidden_states(self, text: str, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(
            [text], max_length=length, padding="max_length", truncation=True, return_tensors="pt"
        ).to(device)
        out = self.model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
        return out.last_hidden_state, tokens.attention_mask

    @torch.no_grad()
    def encode(self, prompt: str) -> TextEmbedding:
        """The conditional text input for `prompt`: (1, max_length, C) states and mask."""
        length = self.config.max_length
        prefix = self.config.prompt_prefix
        if not prefix:
            states, mask = self._hidden_states(prompt, length)
            return TextEmbedding(states, mask)
        # Room for the whole prefix (its token count includes BOS) plus length - 1 prompt tokens.
        total = len(self.tokenizer.encode(prefix)) + length - 2
        states, mask = self._hidden_states(prefix + prompt, total)
        keep = [0, *range(total - length + 1, total)]
        return TextEmbedding(states[:, keep], mask[:, keep])

    @torch.no_grad()
    def encode_negative(self, prompt: str = "") -> TextEmbedding:
        """The unconditional text input (classifier-free guidance): no prefix, same length."""
        states, mask = self._hidden_states(prompt, self.config.max_length)
        return TextEmbedding(states, mask)
