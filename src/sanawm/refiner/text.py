"""The refiner's text input: Gemma-3 hidden states through LTX-2's text connectors.

As SANA-WM's refiner encodes a prompt: the stripped prompt is left-padded to `max_length`
tokens (1024), Gemma-3 gives the hidden states of its embedding and every layer, which are
stacked per token, normalised per layer over the real tokens (mean removed, range scaled to 8:
diffusers' `per_layer_masked_mean_norm`) and fed to `LTX2TextConnectors`; its video output and
mask are the DiT's text input. (The connectors normalise once more; on states already
normalised that second pass changes them by about 1e-7, and it is kept so that the inputs match
the reference refiner's exactly.)
"""

from __future__ import annotations

from pathlib import Path

import torch

from sanawm.errors import UserInputError

MAX_LENGTH = 1024


class RefinerTextEncoder:
    """Prompt -> (embeddings (1, L, caption), mask (1, L)) for the refiner's DiT."""

    def __init__(self, model, tokenizer, connectors, max_length: int = MAX_LENGTH) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.connectors = connectors.eval()
        self.max_length = max_length

    @classmethod
    def load(
        cls,
        text_encoder_dir: str | Path,
        tokenizer_dir: str | Path,
        connectors_dir: str | Path,
        dtype: torch.dtype = torch.float32,
        max_length: int = MAX_LENGTH,
    ) -> RefinerTextEncoder:
        """Load Gemma-3 (any transformers Gemma-3 folder: the multimodal release or a text-only
        model), its tokenizer and the connectors from local folders; nothing is downloaded."""
        try:
            from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors
            from transformers import AutoModel, AutoTokenizer
        except ImportError:
            raise UserInputError("the refiner needs diffusers and transformers: pip install 'sanawm[official]'") from None
        for what, path in (("text encoder", text_encoder_dir), ("tokenizer", tokenizer_dir),
                           ("text connectors", connectors_dir)):  # fmt: skip
            if not Path(path).is_dir():
                raise UserInputError(f"refiner {what} folder not found: {path}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
            model = AutoModel.from_pretrained(str(text_encoder_dir), local_files_only=True, dtype=dtype)
            connectors = LTX2TextConnectors.from_pretrained(str(connectors_dir), local_files_only=True, torch_dtype=dtype)
        except (OSError, ValueError) as err:
            raise UserInputError(f"cannot load the refiner's text encoder: {err}") from None
        return cls(model, tokenizer, connectors, max_length)

    @torch.no_grad()
    def encode(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        from diffusers.pipelines.ltx2.connectors import per_layer_masked_mean_norm

        device = next(self.model.parameters()).device
        tokens = self.tokenizer(
            [prompt.strip()],
            padding="max_length",
            padding_side="left",
            max_length=self.max_length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        ).to(device)
        out = self.model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, output_hidden_states=True)
        states = torch.stack(out.hidden_states, dim=-1)  # (1, L, hidden, layers + 1)
        states = per_layer_masked_mean_norm(states, tokens.attention_mask.sum(-1), device, padding_side="left")
        connectors_dtype = next(self.connectors.parameters()).dtype
        embeds, _, mask = self.connectors(states.to(connectors_dtype), tokens.attention_mask, padding_side="left")
        return embeds, mask
