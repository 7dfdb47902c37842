"""`WorldModel.load` on a diffusers `SanaWMPipeline` folder that diffusers itself writes."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from _tiny_models import save_tiny_gemma, save_tiny_ltx2

from sanawm.errors import UserInputError
from sanawm.pipeline import WorldModel
from sanawm.sampling.schedule import FlowMatchingSchedule

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

CAPTION = 32


def _pipeline(tmp_path, with_text: bool):
    """A tiny random SanaWMPipeline (LTX-2 VAE layout, 2-block DiT) saved by diffusers."""
    parts = tmp_path / "parts"
    vae = save_tiny_ltx2(parts / "vae")
    torch.manual_seed(1)
    transformer = diffusers.SanaWMTransformer3DModel(
        in_channels=8, num_layers=2, hidden_size=64, num_attention_heads=2, linear_head_dim=32,
        softmax_every_n=2, caption_channels=CAPTION, chunk_plucker_post_attn_blocks=2,
    )  # fmt: skip
    with torch.no_grad():
        for p in transformer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    text_encoder = tokenizer = None
    if with_text:
        text_encoder = save_tiny_gemma(parts, hidden_size=CAPTION)
        tokenizer = transformers.AutoTokenizer.from_pretrained(parts / "tokenizer")
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0)
    pipe = diffusers.SanaWMPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                    transformer=transformer.eval(), scheduler=scheduler)  # fmt: skip
    folder = tmp_path / ("with_text" if with_text else "text_free")
    pipe.save_pretrained(folder)
    return pipe, folder


@pytest.fixture(scope="module")
def with_text(tmp_path_factory):
    return _pipeline(tmp_path_factory.mktemp("pipe"), with_text=True)


def test_loads_components_and_reads_the_configs(with_text):
    pipe, folder = with_text
    wm = WorldModel.load(folder, device="cpu")
    cfg = wm.transformer.config
    assert (cfg.depth, cfg.hidden_size, cfg.head_dim, cfg.in_channels, cfg.caption_channels) == (2, 64, 32, 8, CAPTION)
    assert cfg.softmax_blocks == (1,) and not cfg.camera_rms_clamp
    ours = wm.transformer.state_dict()
    for k, v in pipe.transformer.state_dict().items():
        assert torch.equal(ours[k.replace("t_embedder.linear_1", "t_embedder.mlp.0")
                                 .replace("t_embedder.linear_2", "t_embedder.mlp.2")], v), k  # fmt: skip
    # the scheduler's shift, and its schedule is ours
    assert wm.settings.flow_shift == 7.0
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler")
    scheduler.set_timesteps(12)
    torch.testing.assert_close(scheduler.sigmas.float(), FlowMatchingSchedule(7.0).sampling_sigmas(12), rtol=0, atol=1e-6)
    # what no file states comes from the diffusers pipeline's own defaults
    s = wm.settings
    assert (s.height, s.width, s.fps, s.steps, s.cfg) == (704, 1280, 16.0, 60, 5.0)
    assert (wm.vae.latent_channels, wm.vae.temporal_stride, wm.vae.spatial_stride) == (8, 8, 32)
    # the diffusers variant of the camera branch on request
    clamped = WorldModel.load(folder, device="cpu", camera_rms_clamp=True).transformer
    assert clamped.config.camera_rms_clamp and clamped.blocks[0].attn.camera_rms_clamp


@torch.no_grad()
def test_prompt_encoding_matches_diffusers(with_text):
    pipe, folder = with_text
    wm = WorldModel.load(folder, device="cpu")
    prompt = "a red car drives through the desert"
    chi_prompt = diffusers.pipelines.sana_wm.pipeline_sana_wm.DEFAULT_CHI_PROMPT  # what __call__ passes
    cond, cond_mask, neg, neg_mask = pipe.encode_prompt(prompt, "", device=torch.device("cpu"), chi_prompt=chi_prompt)
    ours, negative = wm.text_encoder.encode(prompt), wm.text_encoder.encode_negative("")
    assert torch.equal(ours.mask, cond_mask) and torch.equal(negative.mask, neg_mask)
    torch.testing.assert_close(ours.states, cond[:, 0], rtol=0, atol=1e-5)
    torch.testing.assert_close(negative.states, neg[:, 0], rtol=0, atol=1e-5)


def test_generates_at_a_small_size(with_text):
    _, folder = with_text
    wm = WorldModel.load(folder, device="cpu")
    wm.settings = dataclasses.replace(wm.settings, height=64, width=96, steps=2)
    result = wm.generate(np.zeros((64, 96, 3), np.uint8), action="w-8", prompt="a red car", seed=0)
    assert result.frames.shape == (9, 64, 96, 3)


def test_text_free_folder_needs_a_null_caption_choice(tmp_path):
    _, folder = _pipeline(tmp_path, with_text=False)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["text_encoder"] == [None, None]
    with pytest.raises(UserInputError, match="no null-caption embedding"):
        WorldModel.load(folder, device="cpu")
    wm = WorldModel.load(folder, device="cpu", null_caption="zeros")
    assert wm.text_encoder is None and torch.equal(wm.transformer.y_embedder.y_embedding, torch.zeros(300, CAPTION))


def test_unsupported_scheduler_is_refused(tmp_path):
    _, folder = _pipeline(tmp_path, with_text=False)
    path = folder / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "use_dynamic_shifting": True}))
    with pytest.raises(UserInputError, match="use_dynamic_shifting=True"):
        WorldModel.load(folder, device="cpu", null_caption="zeros")
