"""Synthetic natural-looking clips for the VAE stage (sanawm.train.synthetic) and how the VAE
stage mixes them into its batches."""

import numpy as np
import pytest
import torch

from sanawm.train.synthetic import draw_canvas, fractal_noise, synthetic_clips


def _radial_log_slope(images: np.ndarray) -> float:
    """Least-squares slope of log mean |FFT|^2 against log radial frequency (float64 numpy),
    over the mid band 4 .. side/4 cycles per image, averaged over images and channels."""
    side = images.shape[-1]
    power = (np.abs(np.fft.fft2(images - images.mean(axis=(-2, -1), keepdims=True))) ** 2).reshape(-1, side, side)
    power = power.mean(axis=0)
    f = np.fft.fftfreq(side) * side
    radius = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2).round().astype(int)
    bands = np.arange(4, side // 4)
    mean_power = np.array([power[radius == r].mean() for r in bands])
    return float(np.polyfit(np.log(bands), np.log(mean_power), 1)[0])


@pytest.mark.parametrize("alpha", [0.8, 1.5])
def test_fractal_noise_has_the_asked_spectrum_slope_and_unit_scale(alpha):
    g = torch.Generator().manual_seed(0)
    noise = fractal_noise(4, 2, 64, 64, torch.full((4,), alpha), g)
    assert noise.shape == (4, 2, 64, 64)
    torch.testing.assert_close(noise.mean(dim=(2, 3)), torch.zeros(4, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(noise.std(dim=(2, 3)), torch.ones(4, 2), atol=1e-4, rtol=0)
    # Power = amplitude^2 ~ f^(-2 alpha).
    assert _radial_log_slope(noise.double().numpy()) == pytest.approx(-2 * alpha, abs=0.25)


def test_canvases_have_natural_image_power_spectra_and_use_the_range():
    g = torch.Generator().manual_seed(1)
    canvas = draw_canvas(6, 96, 96, g, torch.device("cpu"))
    assert canvas.shape == (6, 3, 96, 96) and canvas.min() >= 0 and canvas.max() <= 1
    # Natural images: power ~ f^-2 (slopes of about -1.6 .. -3 are reported for photographs).
    slope = _radial_log_slope(canvas.mean(dim=1).double().numpy())
    assert -3.2 < slope < -1.4, slope
    per_image = canvas.flatten(1)
    assert (per_image.max(1).values - per_image.min(1).values).min() > 0.5  # contrasty content, not mush


def test_synthetic_clips_are_seeded_uint8_video_with_small_steady_motion():
    clips = synthetic_clips(4, 9, 32, 40, torch.Generator().manual_seed(2))
    again = synthetic_clips(4, 9, 32, 40, torch.Generator().manual_seed(2))
    other = synthetic_clips(4, 9, 32, 40, torch.Generator().manual_seed(3))
    assert clips.shape == (4, 9, 32, 40, 3) and clips.dtype == torch.uint8
    assert torch.equal(clips, again) and not torch.equal(clips, other)
    x = clips.float()
    step = (x[:, 1:] - x[:, :-1]).abs().mean()
    between_clips = (x - x.roll(1, dims=0)).abs().mean()
    assert step < between_clips / 2  # frames of a clip are views of one canvas
    assert (x[:, -1] - x[:, 0]).abs().mean(dim=(1, 2, 3)).max() > 1.2 * step  # whose window drifts


def test_vae_stage_adds_synthetic_clips_and_weights_frame_0(tmp_path):
    from _train_fixtures import TINY_VAE, write_clip_folder

    from sanawm.train import from_dict
    from sanawm.train.distributed import DistContext
    from sanawm.train.vae import AutoencoderPass, VAETask

    root = write_clip_folder(tmp_path / "clips")
    cfg = from_dict({
        "stage": "vae",
        "data": {"source": "folder", "folder": {"root": str(root)}, "num_frames": 5, "height": 16, "width": 16},
        "vae": TINY_VAE, "vae_loss": {"synthetic_clips": 2, "first_frame_weight": 0.5},
        "run": {"batch_size": 1},
    })  # fmt: skip
    task = VAETask(cfg, DistContext(0, 1, 0, torch.device("cpu")))
    seen = []

    class Recording(AutoencoderPass):
        def forward(self, video, generator=None):
            seen.append(video)
            return super().forward(video, generator)

    world = torch.randint(0, 256, (1, 5, 16, 16, 3), dtype=torch.uint8)
    batch = {"video": world, "sample_seed": torch.tensor([7]), "extra_seed": torch.tensor([11, 12])}
    loss, extras = task.loss(Recording(task.module.vae), batch, None, None)
    (video,) = seen
    assert video.shape == (3, 3, 5, 16, 16)  # 1 world clip + 2 synthetic, each from its own seed
    expected = torch.cat([synthetic_clips(1, 5, 16, 16, torch.Generator().manual_seed(s)) for s in (11, 12)])
    torch.testing.assert_close(video[1:], expected.permute(0, 4, 1, 2, 3).float() / 127.5 - 1, rtol=0, atol=0)
    assert torch.isfinite(loss) and "first_frame" in extras
