"""The refiner in use: its text encoder, LoRA merging, the refiner/ component, WorldModel and
`sanawm generate --refine` on tiny random models (CPU)."""

import json

import numpy as np
import pytest
import torch
from _tiny_models import make_text_free_model_dir
from _tiny_refiner import TINY_LTX2, add_refiner_to_model_dir, save_tiny_refiner_text, tiny_ltx2_transformer

from sanawm.cli import main
from sanawm.errors import UserInputError
from sanawm.pipeline import WorldModel
from sanawm.refiner.text import RefinerTextEncoder
from sanawm.video import read_video


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = make_text_free_model_dir(tmp_path_factory.mktemp("models") / "tiny", chunk_size=1)
    add_refiner_to_model_dir(path, max_text_length=8)
    return path


@pytest.fixture(scope="module")
def world(model_dir):
    return WorldModel.load(model_dir, device="cpu", refiner=True)


@torch.no_grad()
def test_prompt_encoding_equals_the_diffusers_refiner(tmp_path):
    from diffusers.pipelines.sana_wm.refiner import SanaWMLTX2Refiner

    gemma, tokenizer, connectors = save_tiny_refiner_text(tmp_path)
    ours = RefinerTextEncoder.load(tmp_path / "text_encoder", tmp_path / "tokenizer", tmp_path / "connectors",
                                   max_length=8)  # fmt: skip
    # diffusers' prompt encoding, on the objects we saved (a stand-in for the pipeline's self).
    reference = type("Parts", (), dict(tokenizer=tokenizer, text_encoder=gemma, connectors=connectors,
                                       text_max_sequence_length=8))()  # fmt: skip
    for prompt in (" a red car drives ", "the desert at golden hour"):
        embeds, mask = ours.encode(prompt)
        want_embeds, want_mask = SanaWMLTX2Refiner._encode_prompt(
            reference, prompt, device=torch.device("cpu"), dtype=torch.float32
        )
        assert embeds.shape == (1, 8, 16)
        torch.testing.assert_close(embeds, want_embeds, rtol=1e-6, atol=1e-6)
        assert torch.equal(mask, want_mask)
    # The prompt matters.
    assert (ours.encode("a red car")[0] - ours.encode("golden hour")[0]).abs().max() > 1e-3
    with pytest.raises(UserInputError, match="text connectors folder not found"):
        RefinerTextEncoder.load(tmp_path / "text_encoder", tmp_path / "tokenizer", tmp_path / "nope")


@torch.no_grad()
def test_a_merged_lora_equals_the_active_adapter(tmp_path):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors.torch import save_file

    from sanawm.refiner.loading import merge_lora

    latents = torch.randn(1, 4, 4, 3, 4, generator=torch.Generator().manual_seed(0))
    embeds = torch.randn(1, 6, 16, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(1, 6, dtype=torch.long)

    def run(model):
        from sanawm.refiner import refine_latents

        return refine_latents(model, latents, embeds, mask, fps=16.0, generator=torch.Generator().manual_seed(2))

    # alpha = rank: a LoRA file without stored alphas is read with scale alpha / rank = 1.
    adapted = tiny_ltx2_transformer()
    adapted.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0", "ff.net.2"]))
    torch.manual_seed(3)
    for name, p in adapted.named_parameters():
        if "lora_" in name:
            p.copy_(0.2 * torch.randn_like(p))
    expected = run(adapted)
    lora = {f"transformer.{k}": v.contiguous() for k, v in get_peft_model_state_dict(adapted).items()}
    save_file(lora, str(tmp_path / "lora.safetensors"))

    base = tiny_ltx2_transformer()
    plain = run(base)
    merge_lora(base, tmp_path / "lora.safetensors")
    assert not any("lora" in name for name, _ in base.named_parameters())  # merged, adapter removed
    merged = run(base)
    assert ((merged - expected).norm() / expected.norm()).item() <= 1e-5
    assert ((plain - expected).norm() / expected.norm()).item() > 1e-2


def test_generate_with_refinement_keeps_frame_zero_and_changes_the_rest(world):
    plain = world.generate(action="w-12", frames=13, seed=1).frames
    refined = world.generate(action="w-12", frames=13, seed=1, refine=True).frames
    assert refined.shape == plain.shape == (13, 32, 48, 3)
    # Latent frame 0 is the refiner's sink, returned unchanged; the causal VAE decodes video
    # frame 0 from it alone.
    np.testing.assert_array_equal(refined[0], plain[0])
    assert np.abs(refined[1:].astype(int) - plain[1:].astype(int)).mean() > 1.0


def test_streaming_refinement_yields_chunk_by_chunk(world):
    request = world.prepare(action="w-20", frames=21, seed=2)  # 6 latent frames, stage-1 chunks of 1
    pieces = list(world.stream(request=request, refine=True))
    # Stage-1 chunks [0, 2), [2, 3), [3, 4), ...: the sink (video frame 0) is out after the
    # first, block [1, 4) after the third, the short block [4, 6) at the end.
    assert [p.frames.shape[0] for p in pieces] == [1, 12, 8]
    assert [p.start for p in pieces] == [0, 1, 13]
    # Each frame keeps its own camera, though refiner blocks do not line up with stage-1 chunks.
    np.testing.assert_array_equal(np.concatenate([p.c2w for p in pieces]), request.trajectory.c2w.numpy())
    whole = world.generate(request=request, mode="streaming", refine=True).frames
    np.testing.assert_array_equal(np.concatenate([p.frames for p in pieces]), whole)


def test_refinement_needs_a_loaded_refiner(model_dir, tmp_path):
    plain = WorldModel.load(model_dir, device="cpu")
    with pytest.raises(UserInputError, match="no refiner is loaded"):
        plain.generate(action="w-8", refine=True)
    no_refiner = make_text_free_model_dir(tmp_path / "plain")
    with pytest.raises(UserInputError, match="has no refiner component"):
        WorldModel.load(no_refiner, device="cpu", refiner=True)


def test_bad_refiner_config_is_a_user_error(model_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    (copy / "refiner" / "refiner.json").write_text(json.dumps({"kv_max_frames": 1}))
    with pytest.raises(UserInputError, match="kv_max_frames"):
        WorldModel.load(copy, device="cpu", refiner=True)
    (copy / "refiner" / "refiner.json").write_text(json.dumps({"window": 3}))
    with pytest.raises(UserInputError, match="unknown field"):
        WorldModel.load(copy, device="cpu", refiner=True)


@pytest.mark.parametrize("mode", ["bidirectional", "streaming"])
def test_cli_generate_refine(model_dir, tmp_path, mode):
    out = tmp_path / "clip.mp4"
    code = main(["generate", "--model", str(model_dir), "--action", "w-8", "--mode", mode, "--refine",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    assert read_video(out)[0].shape == (9, 32, 48, 3)


def test_cli_refine_without_a_refiner_exits_2(tmp_path, capsys):
    plain = make_text_free_model_dir(tmp_path / "plain")
    code = main(["generate", "--model", str(plain), "--action", "w-8", "--refine", "--out", str(tmp_path / "x.mp4")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no refiner component" in err[0]
    assert not (tmp_path / "x.mp4").exists()


def test_a_diffusers_refiner_transformer_folder_loads_with_its_weights(tmp_path):
    from diffusers.models.transformers.transformer_sana_wm_refiner import SanaWMLTX2RefinerTransformer3DModel

    from sanawm.refiner.loading import load_refiner_transformer

    torch.manual_seed(0)
    theirs = SanaWMLTX2RefinerTransformer3DModel(**TINY_LTX2)
    theirs.save_pretrained(str(tmp_path / "transformer"))
    ours = load_refiner_transformer(tmp_path / "transformer")
    assert type(ours).__name__ == "LTX2VideoTransformer3DModel"
    want = theirs.state_dict()
    assert set(ours.state_dict()) == set(want)
    assert all(torch.equal(v, want[k]) for k, v in ours.state_dict().items())
    with pytest.raises(UserInputError, match="no config.json"):
        load_refiner_transformer(tmp_path / "missing")


def test_offloaded_refiner_gives_the_same_video(model_dir, world):
    # On the CPU the "device" is the CPU too: this checks the offload hooks leave results unchanged.
    offloaded = WorldModel.load(model_dir, device="cpu", refiner_offload=True)
    assert offloaded.refiner.offload
    request = world.prepare(action="w-12", frames=13, seed=4)
    np.testing.assert_array_equal(
        offloaded.generate(request=request, refine=True).frames, world.generate(request=request, refine=True).frames
    )
