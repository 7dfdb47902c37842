"""Tiny random models in the sanawm model-folder layout, for pipeline and CLI tests (CPU, fast)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sanawm.model import build_preset
from sanawm.modeldir import GenerationSettings, save_model_dir, write_model_json
from sanawm.text import TextEncoderConfig
from sanawm.vae import CompactVAE, CompactVAEConfig

GEMMA_WORDS = "<pad> <eos> <bos> <unk> a red car drives through the desert at golden hour describe this scene".split()


def tiny_transformer(
    in_channels: int,
    plucker_channels: int,
    caption_channels: int,
    max_text_len: int,
    softmax_blocks: tuple[int, ...] = (1,),
    seed: int = 0,
):
    """A 2-block DiT (by default one GDN, one softmax block) with the reference init plus
    noise, so that zero-initialised gates and projections still do something."""
    torch.manual_seed(seed)
    model = build_preset(
        "tiny",
        depth=2,
        softmax_blocks=softmax_blocks,
        in_channels=in_channels,
        plucker_channels=plucker_channels,
        caption_channels=caption_channels,
        max_text_len=max_text_len,
        softmax_attn_dtype=None,  # exact float32 attention: tests compare paths tightly
    )
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def tiny_compact_vae(seed: int = 0) -> CompactVAE:
    torch.manual_seed(seed)
    vae = CompactVAE(CompactVAEConfig(latent_channels=4, channels=(8, 8, 8), temporal_downsample=(True, True)))
    return vae.eval()


def make_text_free_model_dir(path: Path, **settings) -> Path:
    """The embedded model's layout: compact VAE (strides 4, 8, 8), no text encoder, 32x48 output."""
    values = dict(height=32, width=48, fps=8.0, steps=2, flow_shift=3.0, cfg=1.0, camera_cfg=1.0, chunk_size=1)
    values.update(settings)
    save_model_dir(path, tiny_transformer(4, 24, 16, 4), tiny_compact_vae(), GenerationSettings(**values))
    return path


def save_tiny_gemma(directory: Path, hidden_size: int = 32):
    """A random 2-layer Gemma-2 in `directory/text_encoder` and a word-level tokenizer with BOS
    in `directory/tokenizer`, both built offline. Returns the model."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import Gemma2Config, Gemma2Model, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(GEMMA_WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(str(directory / "tokenizer"))
    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=len(GEMMA_WORDS),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        pad_token_id=0,
    )
    model = Gemma2Model(config).eval()
    model.save_pretrained(str(directory / "text_encoder"))
    return model


def save_tiny_ltx2(directory: Path, latent_channels: int = 8):
    """A random LTX-2 VAE with the release's stage layout (32x space, 8x time), tiny widths."""
    from diffusers import AutoencoderKLLTX2Video

    torch.manual_seed(0)
    model = AutoencoderKLLTX2Video(
        latent_channels=latent_channels,
        block_out_channels=(8, 16, 32, 64),
        decoder_block_out_channels=(8, 16, 32),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1),
        scaling_factor=0.7,
    )
    with torch.no_grad():
        model.latents_mean.copy_(torch.randn(latent_channels))
        model.latents_std.copy_(torch.rand(latent_channels) + 0.5)
    model.save_pretrained(str(directory))
    return model.eval()


def make_official_layout_dir(path: Path) -> Path:
    """The official release's layout: a single release-format checkpoint file as the
    transformer, an LTX-2 VAE folder and Gemma-2 text encoder + tokenizer folders."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_tiny_ltx2(path / "vae")
    save_tiny_gemma(path, hidden_size=32)
    model = tiny_transformer(8, 48, 32, 6)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / "SANA-WM_tiny.safetensors"))
    settings = GenerationSettings(height=64, width=96, fps=16.0, steps=2, flow_shift=8.0, cfg=3.0, chunk_size=1)
    write_model_json(
        path,
        settings,
        components={
            "transformer": "SANA-WM_tiny.safetensors",
            "vae": "vae",
            "text_encoder": "text_encoder",
            "tokenizer": "tokenizer",
        },
        text=TextEncoderConfig(max_length=6, prompt_prefix="describe this scene "),
    )
    return path


def edit_model_json(path: Path, **changes) -> None:
    doc = json.loads((path / "model.json").read_text())
    for key, value in changes.items():
        doc[key] = value
    (path / "model.json").write_text(json.dumps(doc))


def tiny_model_float32_attention():
    """The tiny preset (random weights, seed 0) with its softmax attention in float32: the
    preset, like SANA-WM, runs it in bf16, which would hide layout mistakes of an attention
    kernel in bf16 rounding."""
    from sanawm.benchmark import random_model

    torch.manual_seed(0)
    model = random_model("tiny", torch.device("cpu"), torch.float32)
    for module in model.modules():
        if hasattr(module, "attention_kernel"):
            module.attn_dtype = None
    return model


def tiny_camera_dit(**overrides):
    """A 2-block DiT (GDN, softmax; float32 attention unless overridden) with perturbed weights,
    and the keyword inputs of one chunk-causal call over 3 frames whose camera turns and moves
    (so the camera transforms, the key inflation and the RMS clamps all matter). `overrides` go
    to the config (e.g. gdn_backend, camera_rms_clamp)."""
    torch.manual_seed(0)
    config = dict(depth=2, hidden_size=32, head_dim=16, softmax_blocks=(1,), softmax_attn_dtype=None)
    model = build_preset("tiny", **{**config, **overrides})
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    cfg, (B, T, H, W) = model.config, (1, 3, 2, 3)
    g = torch.Generator().manual_seed(1)
    raymap = torch.zeros(B, T, 20)
    yaw = 0.3 * torch.arange(T)
    c2w = torch.eye(4).repeat(T, 1, 1)
    c2w[:, 0, 0], c2w[:, 0, 2], c2w[:, 2, 0], c2w[:, 2, 2] = yaw.cos(), yaw.sin(), -yaw.sin(), yaw.cos()
    c2w[:, :3, 3] = torch.tensor([0.4, -0.2, 1.0]) * torch.arange(T)[:, None]
    raymap[0, :, :16] = c2w.flatten(1)
    raymap[..., 16:] = torch.tensor([3.0, 3.0, (W - 1) / 2, (H - 1) / 2])
    inputs = dict(
        latents=torch.randn(B, cfg.in_channels, T, H, W, generator=g),
        timestep=torch.tensor([[0.0, 500.0, 900.0]]),
        text=torch.randn(B, 4, cfg.caption_channels, generator=g),
        text_mask=torch.ones(B, 4, dtype=torch.int64),
        raymap=raymap,
        chunk_plucker=torch.randn(B, cfg.plucker_channels, T, H, W, generator=g),
        chunk_starts=[0, 1],
    )
    return model, inputs
