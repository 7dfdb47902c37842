"""Video VAEs: the compact causal VAE and the LTX-2 adapter (tiny random weights, no downloads)."""

import json

import numpy as np
import pytest
import torch
from _tiny_models import save_tiny_ltx2

from sanawm.errors import UserInputError
from sanawm.train.config import VAELossConfig
from sanawm.train.vae import AutoencoderPass, vae_loss_terms
from sanawm.vae import CompactVAE, CompactVAEConfig, LTX2VAE, VideoVAE, load_vae

TINY = CompactVAEConfig(latent_channels=4, channels=(8, 12, 16), temporal_downsample=(True, True), patch_size=2)


def _tiny_vae(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    vae = CompactVAE(TINY).to(dtype).eval()
    vae.set_latent_stats(torch.randn(4, dtype=dtype), torch.rand(4, dtype=dtype) + 0.5)
    return vae


def _video(frames, h=32, w=48, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, h, w, generator=g, dtype=dtype) * 2 - 1


def test_compact_shapes_follow_the_strides():
    vae = _tiny_vae()
    assert vae.strides == (4, 8, 8)
    z = vae.encode(_video(9))
    assert z.shape == (1, 4, 3, 4, 6)
    assert vae.decode(z).shape == (1, 3, 9, 32, 48)
    assert vae.latent_frames(33) == 9 and vae.pixel_frames(9) == 33


def test_compact_default_is_small_with_the_lead_s_layout():
    vae = CompactVAE()
    assert vae.strides == (4, 8, 8) and vae.latent_channels == 16
    assert sum(p.numel() for p in vae.parameters()) < 10_000_000


@torch.no_grad()
def test_compact_encoder_is_causal_with_the_first_frame_alone():
    vae = _tiny_vae()
    video = _video(13)
    z = vae.encode(video)
    # Latent i sees pixel frames <= 4 i: changing frames 5.. must leave latents 0 and 1 alone.
    changed = video.clone()
    changed[:, :, 5:] = -changed[:, :, 5:]
    z2 = vae.encode(changed)
    torch.testing.assert_close(z2[:, :, :2], z[:, :, :2], rtol=0, atol=1e-12)
    assert (z2[:, :, 2:] - z[:, :, 2:]).abs().max() > 1e-3
    # The first latent is the first image encoded on its own.
    torch.testing.assert_close(vae.encode(video[:, :, :1]), z[:, :, :1], rtol=0, atol=1e-12)


@torch.no_grad()
def test_compact_decoder_is_causal():
    vae = _tiny_vae()
    z = torch.randn(1, 4, 4, 4, 6, dtype=torch.float64)
    frames = vae.decode(z)
    changed = z.clone()
    changed[:, :, 2:] += 1.0
    # Latents 0, 1 own pixel frames 0..4.
    torch.testing.assert_close(vae.decode(changed)[:, :, :5], frames[:, :, :5], rtol=0, atol=1e-12)


@torch.no_grad()
def test_compact_chunk_decoding_equals_one_shot():
    vae = _tiny_vae()
    z = torch.randn(1, 4, 6, 4, 6, dtype=torch.float64)
    full = vae.decode(z)
    decoder = vae.chunk_decoder()
    parts = [decoder.decode(z[:, :, a:b]) for a, b in [(0, 2), (2, 3), (3, 6)]]
    assert [p.shape[2] for p in parts] == [5, 4, 12]
    torch.testing.assert_close(torch.cat(parts, dim=2), full, rtol=0, atol=1e-10)


@torch.no_grad()
def test_compact_normalisation_uses_the_stored_stats():
    vae = _tiny_vae()
    video = _video(5)
    raw_mean, _ = vae.encode_distribution(video)
    expected = (raw_mean - vae.latents_mean.view(1, -1, 1, 1, 1)) / vae.latents_std.view(1, -1, 1, 1, 1)
    torch.testing.assert_close(vae.encode(video), expected)
    torch.testing.assert_close(vae.decode(expected), vae.decode_raw(raw_mean))


def test_compact_loss_matches_an_independent_kl_and_trains():
    # The VAE stage's objective (sanawm.train.vae): one reparameterised pass, then the terms.
    vae = _tiny_vae(dtype=torch.float32).train()
    video = _video(5, dtype=torch.float32)
    recon, mean, logvar = AutoencoderPass(vae)(video, [torch.Generator().manual_seed(i) for i in range(len(video))])
    cfg = VAELossConfig(l1_weight=1.0, l2_weight=0.0, kl_weight=0.5, gradient_weight=0.0)
    parts = vae_loss_terms(recon, video, mean, logvar, cfg)
    posterior = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
    prior = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    kl = torch.distributions.kl_divergence(posterior, prior).mean()
    torch.testing.assert_close(parts["kl"], kl, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts["l1"], (recon - video).abs().mean())
    torch.testing.assert_close(parts["loss"], parts["l1"] + 0.5 * parts["kl"])
    parts["loss"].backward()
    assert vae.encoder.conv_in.conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("frames", [2, 6, 8])
def test_compact_rejects_bad_frame_counts(frames):
    # The user-facing check (a training config's frame count) ...
    with pytest.raises(UserInputError, match="4k\\+1"):
        _tiny_vae().check_num_frames(frames)
    # ... and the shape assert of encode, whose callers build the video themselves.
    with pytest.raises(AssertionError, match="4k\\+1"):
        _tiny_vae().encode(_video(frames))


def test_compact_rejects_impossible_sizes():
    with pytest.raises(UserInputError, match="multiples of 8"):
        _tiny_vae().check_image_size(30, 48)
    with pytest.raises(AssertionError, match="multiples of 8"):
        _tiny_vae().encode(_video(5, h=30, w=48))
    with pytest.raises(AssertionError, match="latents must be"):
        _tiny_vae().decode(torch.zeros(1, 3, 2, 4, 4, dtype=torch.float64))


def test_compact_save_load_round_trip(tmp_path):
    vae = _tiny_vae(dtype=torch.float32)
    vae.save(tmp_path / "vae")
    loaded = load_vae(tmp_path / "vae")
    assert isinstance(loaded, CompactVAE) and loaded.config == vae.config
    for key, value in vae.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def test_compact_load_names_what_is_wrong(tmp_path):
    with pytest.raises(UserInputError, match="config not found"):
        load_vae(tmp_path)
    _tiny_vae(dtype=torch.float32).save(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(UserInputError, match="weights not found"):
        load_vae(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    CompactVAE(CompactVAEConfig(**{**{k: v for k, v in config.items() if k != "kind"}, "latent_channels": 8})).save(
        tmp_path
    )
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserInputError, match="wrong shape"):
        load_vae(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"kind": "mystery"}))
    with pytest.raises(UserInputError, match="unknown VAE"):
        load_vae(tmp_path)


# ---- LTX-2 adapter ----------------------------------------------------------------------


@torch.no_grad()
def test_ltx2_adapter_layout_and_normalisation(tmp_path):
    reference = save_tiny_ltx2(tmp_path / "vae")
    vae = load_vae(tmp_path / "vae")
    assert isinstance(vae, LTX2VAE)
    assert vae.strides == (8, 32, 32) and vae.latent_channels == 8
    video = _video(9, h=64, w=96, dtype=torch.float32)
    latents = vae.encode(video)
    assert latents.shape == (1, 8, 2, 2, 3)
    mean = reference.latents_mean.view(1, -1, 1, 1, 1)
    std = reference.latents_std.view(1, -1, 1, 1, 1)
    raw = reference.encode(video).latent_dist.mode()
    torch.testing.assert_close(latents, (raw - mean) * 0.7 / std)
    decoded = vae.decode(latents)
    torch.testing.assert_close(decoded, reference.decode(latents / 0.7 * std + mean, return_dict=False)[0])
    assert decoded.shape == (1, 3, 9, 64, 96)


@torch.no_grad()
def test_ltx2_chunk_decoder_delivers_each_chunk_s_frames(tmp_path):
    save_tiny_ltx2(tmp_path / "vae")
    vae = load_vae(tmp_path / "vae")
    z = torch.randn(1, 8, 4, 2, 3)
    decoder = vae.chunk_decoder()
    parts = [decoder.decode(z[:, :, :2]), decoder.decode(z[:, :, 2:3]), decoder.decode(z[:, :, 3:])]
    assert [p.shape[2] for p in parts] == [9, 8, 8]
    torch.testing.assert_close(parts[0], vae.decode(z[:, :, :2]))


def test_ltx2_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match="config not found"):
        LTX2VAE.load(tmp_path / "nothing")


def test_pixel_conversion_round_trips_every_uint8_level():
    levels = torch.arange(256, dtype=torch.uint8)
    frames = levels.view(1, 1, 16, 16, 1).expand(2, 3, 16, 16, 3).contiguous()  # (B, F, H, W, 3)
    pixels = VideoVAE.preprocess(frames)
    assert pixels.shape == (2, 3, 3, 16, 16) and pixels.dtype == torch.float32
    want = levels.double().view(16, 16) / 127.5 - 1.0  # float64 formula
    torch.testing.assert_close(pixels[1, 2, 0].double(), want, rtol=0, atol=1e-7)
    assert pixels.min() == -1.0 and pixels.max() == 1.0
    assert torch.equal(VideoVAE.postprocess(pixels), frames)
    # out-of-range decoder outputs are clamped, values between levels rounded to the nearest
    odd = torch.tensor([-3.0, 2.0, -1.0 + 0.4 / 127.5, -1.0 + 0.6 / 127.5]).view(1, 1, 1, 1, 4).expand(1, 3, 1, 1, 4)
    assert VideoVAE.postprocess(odd)[0, 0, 0, :, 0].tolist() == [0, 255, 0, 1]


def test_pixel_conversion_of_a_long_clip_matches_the_float64_formula_on_every_frame():
    # Longer than the frames postprocess converts at a time, and not a multiple of them.
    pixels = torch.randn(2, 3, 37, 5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.8
    pixels[:, :, -1] = 0.37 / 127.5  # a last, partial group converts too
    want = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1)
    given = pixels.float()
    kept = given.clone()
    assert torch.equal(VideoVAE.postprocess(given), want)
    assert torch.equal(given, kept)  # the decoder's output is left as it was


def test_dtype_and_device_are_the_weights():
    vae = _tiny_vae(dtype=torch.float64)
    assert vae.dtype == torch.float64 and vae.device == torch.device("cpu")


@torch.no_grad()
def test_ltx2_tiled_decode_at_the_release_size(tmp_path):
    # The release's 704x1280 frames are 22x40 latents, beyond one 512-pixel tile: diffusers' own
    # compression ratios (64x16 for this layout when the config leaves them out) would cut them
    # into tiles one latent row high, which its convs refuse.
    save_tiny_ltx2(tmp_path / "vae")
    vae = load_vae(tmp_path / "vae")
    assert (vae.autoencoder.spatial_compression_ratio, vae.autoencoder.temporal_compression_ratio) == (32, 8)
    torch.manual_seed(0)
    z = torch.randn(1, 8, 2, 22, 40)
    tiled = vae.decode(z)
    assert tiled.shape == (1, 3, 9, 704, 1280)
    vae.autoencoder.disable_tiling()
    whole = vae.decode(z)
    # Far from every seam (the first tile ends at 448-512 px) the tiles hold the same pixels.
    torch.testing.assert_close(tiled[..., 100:300, 100:300], whole[..., 100:300, 100:300])
    assert not torch.allclose(tiled, whole)  # and the decode was tiled


def test_first_frame_term_is_frame_0_s_l1_plus_l2():
    g = torch.Generator().manual_seed(3)
    video, recon = (torch.rand(2, 3, 5, 8, 8, generator=g) for _ in range(2))
    mean = torch.randn(2, 4, 2, 1, 1, generator=g)
    logvar = torch.zeros_like(mean)
    cfg = VAELossConfig(l1_weight=0.0, l2_weight=0.0, kl_weight=0.0, gradient_weight=0.0, first_frame_weight=0.5)
    parts = vae_loss_terms(recon, video, mean, logvar, cfg)
    diffs = [float(r) - float(v) for r, v in zip(recon[:, :, 0].flatten().tolist(), video[:, :, 0].flatten().tolist())]
    expected = sum(abs(d) for d in diffs) / len(diffs) + sum(d * d for d in diffs) / len(diffs)
    assert float(parts["first_frame"]) == pytest.approx(expected, rel=1e-5)
    assert float(parts["loss"]) == pytest.approx(0.5 * expected, rel=1e-5)


@torch.no_grad()
def test_compact_v2_layout_keeps_tokens_and_chunk_decoding():
    # The v2 recipe's VAE (64 latent channels) at tiny widths: same strides, chunked = one-shot.
    from sanawm.train.embedded import VAE2_LATENT_CHANNELS

    torch.manual_seed(0)
    vae = CompactVAE(CompactVAEConfig(latent_channels=VAE2_LATENT_CHANNELS, channels=(8, 12, 16))).double().eval()
    z = vae.encode(_video(9))
    assert z.shape == (1, VAE2_LATENT_CHANNELS, 3, 4, 6)
    decoder = vae.chunk_decoder()
    parts = [decoder.decode(z[:, :, a:b]) for a, b in [(0, 1), (1, 3)]]
    torch.testing.assert_close(torch.cat(parts, dim=2), vae.decode(z), rtol=0, atol=1e-10)


SHORTCUT = CompactVAEConfig(latent_channels=6, channels=(8, 12, 16), linear_shortcut=True)


def _shortcut_vae(seed=0):
    torch.manual_seed(seed)
    vae = CompactVAE(SHORTCUT).double().eval()
    for p in vae.encoder.linear.parameters():  # random linear maps: their paths must be visible
        p.data.normal_()
    for p in vae.decoder.linear.parameters():
        p.data.normal_()
    return vae


@torch.no_grad()
def test_linear_shortcut_keeps_causality_and_chunk_decoding():
    vae = _shortcut_vae()
    video = _video(13)
    z = vae.encode(video)
    changed = video.clone()
    changed[:, :, 5:] = -changed[:, :, 5:]
    z2 = vae.encode(changed)
    torch.testing.assert_close(z2[:, :, :2], z[:, :, :2], rtol=0, atol=1e-12)
    assert (z2[:, :, 2:] - z[:, :, 2:]).abs().max() > 1e-3
    torch.testing.assert_close(vae.encode(video[:, :, :1]), z[:, :, :1], rtol=0, atol=1e-12)
    full = vae.decode(z)
    decoder = vae.chunk_decoder()
    parts = [decoder.decode(z[:, :, a:b]) for a, b in [(0, 1), (1, 2), (2, 4)]]
    assert [p.shape[2] for p in parts] == [1, 4, 8]
    torch.testing.assert_close(torch.cat(parts, dim=2), full, rtol=0, atol=1e-10)


@torch.no_grad()
def test_fitted_linear_shortcut_is_the_pca_code():
    # After fitting, the VAE's round trip is the projection onto the top principal components
    # (numpy SVD in float64) of 8x8 patches: frame 0 alone, later frames in groups of 4.
    from sanawm.train.vae import fit_linear_shortcut

    vae = _shortcut_vae()
    g = torch.Generator().manual_seed(4)
    base = torch.randn(6, 3, 1, 32, 32, generator=g, dtype=torch.float64)
    video = (base + 0.3 * torch.randn(6, 3, 9, 32, 32, generator=g, dtype=torch.float64)).tanh()
    fit_linear_shortcut(vae, video)
    recon = vae.decode_raw(vae.encode_distribution(video)[0])

    def pca_round_trip(vectors):  # (N, D) -> projection on the top 6 components
        x = vectors.numpy()
        mean = x.mean(0)
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        p = vt[:6]
        return (x - mean) @ p.T @ p + mean

    v = video.numpy()
    first = v[:, :, 0].reshape(6, 3, 4, 8, 4, 8).transpose(0, 2, 4, 1, 3, 5).reshape(-1, 192)
    expected_first = pca_round_trip(torch.from_numpy(first)).reshape(6, 4, 4, 3, 8, 8).transpose(0, 3, 1, 4, 2, 5)
    np.testing.assert_allclose(recon[:, :, 0].numpy(), expected_first.reshape(6, 3, 32, 32), atol=1e-8)
    later = v[:, :, 1:].reshape(6, 3, 2, 4, 4, 8, 4, 8).transpose(0, 2, 4, 6, 1, 3, 5, 7).reshape(-1, 768)
    expected_later = pca_round_trip(torch.from_numpy(later)).reshape(6, 2, 4, 4, 3, 4, 8, 8)
    expected_later = expected_later.transpose(0, 4, 1, 5, 2, 6, 3, 7).reshape(6, 3, 8, 32, 32)
    np.testing.assert_allclose(recon[:, :, 1:].numpy(), expected_later, atol=1e-8)
    # The convolutional paths start silent; the posterior starts narrow.
    assert float(vae.encode_distribution(video)[1].max()) == pytest.approx(-8.0)
