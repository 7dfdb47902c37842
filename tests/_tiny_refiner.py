"""A tiny random LTX-2 refiner transformer (the config that WAVE2.md says runs), CPU, fp32."""

from __future__ import annotations

import torch

TINY_LTX2 = dict(
    in_channels=4,
    out_channels=4,
    patch_size=1,
    patch_size_t=1,
    num_attention_heads=2,
    attention_head_dim=8,
    cross_attention_dim=16,
    caption_channels=16,
    audio_in_channels=4,
    audio_out_channels=4,
    audio_num_attention_heads=2,
    audio_attention_head_dim=4,
    audio_cross_attention_dim=8,
    num_layers=2,
    qk_norm="rms_norm_across_heads",
    rope_double_precision=False,
)


def tiny_ltx2_transformer(seed: int = 0):
    """diffusers' LTX2VideoTransformer3DModel with random weights plus noise (so that
    zero-initialised parts still act)."""
    from diffusers import LTX2VideoTransformer3DModel

    torch.manual_seed(seed)
    model = LTX2VideoTransformer3DModel(**TINY_LTX2).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


TINY_TEXT_WORDS = "<pad> <eos> <bos> <unk> a red car drives through the desert at golden hour".split()


def save_tiny_refiner_text(directory, caption_channels: int = 16, seed: int = 0):
    """A random 2-layer multimodal Gemma-3 (tiny SigLIP tower) in `directory/text_encoder`, a
    word-level tokenizer with BOS in `directory/tokenizer` and random LTX-2 text connectors in
    `directory/connectors`, all built offline. Returns (gemma, tokenizer, connectors)."""
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(TINY_TEXT_WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(str(directory / "tokenizer"))

    torch.manual_seed(seed)
    config = Gemma3Config(
        text_config=dict(
            vocab_size=len(TINY_TEXT_WORDS),
            hidden_size=caption_channels,
            intermediate_size=2 * caption_channels,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            sliding_window=4,
            pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=8
        ),
        mm_tokens_per_image=4,
        image_token_index=len(TINY_TEXT_WORDS) - 1,
    )
    gemma = Gemma3ForConditionalGeneration(config).eval()
    gemma.save_pretrained(str(directory / "text_encoder"))

    connectors = LTX2TextConnectors(
        caption_channels=caption_channels,
        text_proj_in_factor=3,  # embedding + 2 layers
        video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=caption_channels // 2,
        video_connector_num_layers=1,
        video_connector_num_learnable_registers=4,
        audio_connector_num_attention_heads=2,
        audio_connector_attention_head_dim=caption_channels // 2,
        audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=4,
        connector_rope_base_seq_len=64,
    ).eval()
    with torch.no_grad():
        for p in connectors.parameters():
            p.add_(0.05 * torch.randn_like(p))
    connectors.save_pretrained(str(directory / "connectors"))
    return gemma, tokenizer, connectors


def save_tiny_refiner(directory, seed: int = 0, **config):
    """A complete tiny `refiner/` folder (transformer, connectors, text encoder, tokenizer and,
    when `config` is given, refiner.json). Returns the transformer."""
    import json

    directory.mkdir(parents=True, exist_ok=True)
    transformer = tiny_ltx2_transformer(seed)
    transformer.save_pretrained(str(directory / "transformer"))
    save_tiny_refiner_text(directory, caption_channels=TINY_LTX2["caption_channels"], seed=seed)
    if config:
        (directory / "refiner.json").write_text(json.dumps(config))
    return transformer


def add_refiner_to_model_dir(model_dir, **config):
    """Put a tiny refiner into a model folder and name it in model.json."""
    import json

    transformer = save_tiny_refiner(model_dir / "refiner", **config)
    doc = json.loads((model_dir / "model.json").read_text())
    doc["components"]["refiner"] = "refiner"
    (model_dir / "model.json").write_text(json.dumps(doc))
    return transformer
