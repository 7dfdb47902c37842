"""`WorldModel`: model folders (text-free and the official layout), generation in both modes,
the request checks."""

import json
import shutil

import numpy as np
import pytest
import torch
from _tiny_models import (
    edit_model_json,
    make_official_layout_dir,
    make_text_free_model_dir,
    tiny_compact_vae,
)
from PIL import Image

from sanawm.camera import Trajectory, action_to_c2w, default_intrinsics, plan_resize_crop, prepare_image
from sanawm.errors import UserInputError
from sanawm.pipeline import WorldModel
from sanawm.text import GemmaTextEncoder
from sanawm.vae import CompactVAE, CompactVAEConfig, LTX2VAE

IMAGE = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def text_free_dir(tmp_path_factory):
    return make_text_free_model_dir(tmp_path_factory.mktemp("models") / "text_free")


@pytest.fixture(scope="module")
def wm(text_free_dir):
    return WorldModel.load(text_free_dir, device="cpu")


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory):
    return make_official_layout_dir(tmp_path_factory.mktemp("models") / "official")


def test_generate_returns_frames_and_their_cameras(wm):
    result = wm.generate(IMAGE, action="w-4,l-4", seed=1)
    assert result.frames.shape == (9, 32, 48, 3) and result.frames.dtype == np.uint8
    assert result.fps == 8.0
    traj = result.trajectory
    assert traj.image_size == (32, 48)
    torch.testing.assert_close(traj.c2w, action_to_c2w("w-4,l-4"))
    torch.testing.assert_close(traj.intrinsics, default_intrinsics((32, 48)).expand(9, 4))


@torch.no_grad()
def test_first_frame_is_the_input_image_through_the_vae(wm):
    result = wm.generate(IMAGE, action="w-8", seed=2)
    picture, _ = prepare_image(IMAGE, (32, 48))
    pixels = torch.from_numpy(np.array(picture)).permute(2, 0, 1).float()[None, :, None] / 127.5 - 1
    expected = ((wm.vae.decode(wm.vae.encode(pixels))[0, :, 0].clamp(-1, 1) + 1) * 127.5).round()
    diff = np.abs(result.frames[0].astype(int) - expected.permute(1, 2, 0).numpy().astype(int))
    assert diff.max() <= 1


def test_streaming_frames_arrive_per_chunk_and_make_the_clip(wm):
    chunks = list(wm.stream(IMAGE, action="w-8", frames=9, seed=3))
    # chunk_size 1: latent frames [0, 2) then [2, 3) -> 1 + 4 frames, then 4 frames.
    assert [c.frames.shape[0] for c in chunks] == [5, 4] and [c.start for c in chunks] == [0, 5]
    clip = wm.generate(IMAGE, action="w-8", seed=3, mode="streaming")
    np.testing.assert_array_equal(np.concatenate([c.frames for c in chunks]), clip.frames)
    np.testing.assert_array_equal(np.concatenate([c.c2w for c in chunks]), clip.trajectory.c2w.double().numpy())
    np.testing.assert_array_equal(np.concatenate([c.intrinsics for c in chunks]),
                                  clip.trajectory.intrinsics.double().numpy())  # fmt: skip


def test_seed_makes_generation_reproducible(wm):
    a = wm.generate(IMAGE, action="w-8", seed=4).frames
    b = wm.generate(IMAGE, action="w-8", seed=4).frames
    c = wm.generate(IMAGE, action="w-8", seed=5).frames
    np.testing.assert_array_equal(a, b)
    assert np.abs(a[1:].astype(int) - c[1:].astype(int)).max() > 0


def test_bundled_example_image_is_the_default(wm):
    request = wm.prepare(action="w-8")
    assert request.image.size == (48, 32)


def test_trajectory_files_and_intrinsics_follow_the_crop(wm, tmp_path):
    c2w = action_to_c2w("w-8")
    np.save(tmp_path / "poses.npy", c2w.numpy())
    request = wm.prepare(IMAGE, trajectory=tmp_path / "poses.npy")
    torch.testing.assert_close(request.trajectory.intrinsics, default_intrinsics((32, 48)).expand(9, 4))
    # A trajectory for a 60x80 camera: intrinsics go through the same resize + centre crop as the image.
    k = torch.tensor([70.0, 72.0, 41.0, 29.0])
    request = wm.prepare(IMAGE, trajectory=Trajectory(c2w, k, (60, 80)))
    expected = plan_resize_crop((60, 80), (32, 48)).apply(k)
    torch.testing.assert_close(request.trajectory.intrinsics, expected.expand(9, 4))
    assert request.trajectory.image_size == (32, 48)


def test_request_notes(wm):
    request = wm.prepare(IMAGE, action="w-10", frames=7, prompt="a red car", cfg=3.0)
    assert request.num_frames == 5
    assert any("5 frames" in n for n in request.notes)
    assert any("prompt is ignored" in n for n in request.notes)
    assert any("text guidance" in n for n in request.notes)


def test_camera_branch_variant_is_selectable(text_free_dir):
    default = WorldModel.load(text_free_dir, device="cpu").transformer
    clamped = WorldModel.load(text_free_dir, device="cpu", camera_rms_clamp=True).transformer
    assert not default.config.camera_rms_clamp and clamped.config.camera_rms_clamp
    assert [b.attn.camera_rms_clamp for b in clamped.blocks if hasattr(b.attn, "camera_rms_clamp")] == [True]


def test_key_layout_and_nearest_rounding(wm):
    # 8 frames of action give 9 poses; the VAE makes 4k+1 frames: 8 asked for is 9 to the nearest
    request = wm.prepare(IMAGE, action="ld-8", keys="v2", frames=8, frames_rounding="nearest")
    assert request.num_frames == 9 and any("rounded to the nearest" in n for n in request.notes)
    torch.testing.assert_close(request.trajectory.c2w, action_to_c2w("ld-8", 0.05, 1.2, keys="v2"))
    assert wm.prepare(IMAGE, action="ld-8", frames=8).num_frames == 5  # default: down, v1
    torch.testing.assert_close(wm.prepare(IMAGE, action="ld-8").trajectory.c2w, action_to_c2w("ld-8"))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(action="w-8", frames=20), "the trajectory has 9 poses, fewer than the 20 frames"),
        (dict(action="w-8", frames=0), "positive integer"),
        (dict(action="w-2"), "too short"),
        (dict(action="q-8"), "q"),
        (dict(action="w-0"), "w-0"),
        (dict(), "exactly one"),
        (dict(action="w-8", trajectory="x.npz"), "exactly one"),
        (dict(trajectory="missing.npz"), "trajectory file not found"),
        (dict(action="w-8", steps=0), "steps"),
        (dict(action="w-8", steps=2.5), "steps"),
        (dict(action="w-8", steps=True), "steps"),
        (dict(action="w-8", cfg=float("nan")), "cfg"),
        (dict(action="w-8", camera_cfg=-1.0), "camera_cfg"),
        (dict(action="w-8", seed=-1), "seed"),
        (dict(action="w-8", keys="v3"), "unknown key layout"),
        (dict(action="w-8", frames_rounding="up"), "unknown frame rounding"),
    ],
)
def test_bad_requests_are_user_errors(wm, kwargs, message):
    with pytest.raises(UserInputError, match=message):
        wm.prepare(IMAGE, **kwargs)


def test_bad_images_are_user_errors(wm, tmp_path):
    with pytest.raises(UserInputError, match="image not found"):
        wm.prepare(tmp_path / "nope.png", action="w-8")
    (tmp_path / "broken.png").write_text("not an image")
    with pytest.raises(UserInputError, match="cannot read the image"):
        wm.prepare(tmp_path / "broken.png", action="w-8")
    with pytest.raises(UserInputError, match="uint8"):
        wm.prepare(np.zeros((10, 10), dtype=np.float32), action="w-8")


def test_official_layout_loads_and_uses_the_prompt(official_dir):
    wm = WorldModel.load(official_dir, device="cpu")
    assert isinstance(wm.text_encoder, GemmaTextEncoder) and isinstance(wm.vae, LTX2VAE)
    assert wm.vae.strides == (8, 32, 32)
    car = wm.generate(Image.fromarray(IMAGE), action="w-16", prompt="a red car", seed=0)
    assert car.frames.shape == (17, 64, 96, 3)
    desert = wm.generate(Image.fromarray(IMAGE), action="w-16", prompt="the desert", seed=0)
    assert np.abs(car.frames[1:].astype(int) - desert.frames[1:].astype(int)).max() > 0


def test_missing_components_are_named(official_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(official_dir, broken)
    shutil.rmtree(broken / "tokenizer")
    with pytest.raises(UserInputError, match="'tokenizer' not found"):
        WorldModel.load(broken, device="cpu")
    edit_model_json(broken, components={"transformer": "SANA-WM_tiny.safetensors", "vae": "vae",
                                        "text_encoder": "text_encoder", "tokenizer": None})  # fmt: skip
    with pytest.raises(UserInputError, match="has a text_encoder but the tokenizer component is missing"):
        WorldModel.load(broken, device="cpu")
    edit_model_json(broken, components={"transformer": "SANA-WM_tiny.safetensors"})
    with pytest.raises(UserInputError, match="the vae component is missing"):
        WorldModel.load(broken, device="cpu")
    (broken / "model.json").unlink()
    with pytest.raises(UserInputError, match="model description not found"):
        WorldModel.load(broken, device="cpu")
    with pytest.raises(UserInputError, match="model folder not found"):
        WorldModel.load(tmp_path / "nothing", device="cpu")


def test_components_that_do_not_fit_are_reported(text_free_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(text_free_dir, broken)
    shutil.rmtree(broken / "vae")
    CompactVAE(CompactVAEConfig(latent_channels=6, channels=(8, 8, 8))).save(broken / "vae")
    with pytest.raises(UserInputError, match="expects 4 latent channels, the VAE makes 6"):
        WorldModel.load(broken, device="cpu")
    shutil.rmtree(broken / "vae")
    tiny_compact_vae().save(broken / "vae")
    (broken / "transformer" / "model.safetensors").unlink()
    with pytest.raises(UserInputError, match="transformer weights not found"):
        WorldModel.load(broken, device="cpu")


def test_without_a_folder_the_embedded_model_is_loaded(text_free_dir, tmp_path, monkeypatch):
    import sanawm.pipeline as pipeline

    monkeypatch.setattr(pipeline, "_asset", lambda name: tmp_path / name)
    with pytest.raises(UserInputError, match="embedded default model is not part of this installation"):
        WorldModel.load(device="cpu")
    shutil.copytree(text_free_dir, tmp_path / pipeline.EMBEDDED_MODEL)
    assert WorldModel.load(device="cpu").image_size == (32, 48)


def test_a_cuda_device_without_cuda_is_a_user_error(text_free_dir):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(UserInputError, match="CUDA is not available"):
        WorldModel.load(text_free_dir, device="cuda")


def test_context_noise_comes_from_the_model_settings_and_is_checked(text_free_dir, tmp_path):
    """`settings.context_sigma` of model.json is the streaming default that `prepare` hands the
    sampler, a call may override it, and a level outside [0, 1) is a user error either way."""
    folder = tmp_path / "noised"
    shutil.copytree(text_free_dir, folder)
    settings = json.loads((folder / "model.json").read_text())["settings"]
    edit_model_json(folder, settings={**settings, "context_sigma": 0.15})
    wm = WorldModel.load(folder, device="cpu")
    assert wm.prepare(action="w-8").sampler.context_sigma == 0.15
    assert wm.prepare(action="w-8", context_sigma=0.0).sampler.context_sigma == 0.0
    with pytest.raises(UserInputError, match="context_sigma"):
        wm.prepare(action="w-8", context_sigma=1.0)
    edit_model_json(folder, settings={**settings, "context_sigma": 1.5})
    with pytest.raises(UserInputError, match="context_sigma must be in"):
        WorldModel.load(folder, device="cpu")
