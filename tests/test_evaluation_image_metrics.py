"""PSNR / SSIM / sharpness against float64 numpy references written with plain loops."""

import math

import numpy as np
import pytest
import torch

from sanawm.errors import UserInputError
from sanawm.evaluation import psnr, sharpness, ssim
from sanawm.evaluation.image_metrics import PSNR_CAP_DB


def _psnr_reference(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0**2 / mse)


def _ssim_reference(a, b):
    """SSIM by explicit loops over 11x11 window positions and channels (Wang et al. 2004)."""
    a, b = a.astype(np.float64) / 255.0, b.astype(np.float64) / 255.0
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    height, width, channels = a.shape
    for c in range(channels):
        for i in range(height - 10):
            for j in range(width - 10):
                x, y = a[i : i + 11, j : j + 11, c], b[i : i + 11, j : j + 11, c]
                mx, my = (w * x).sum(), (w * y).sum()
                vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
                cov = (w * (x - mx) * (y - my)).sum()
                values.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def _sharpness_reference(frame):
    luma = frame.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    h, w = luma.shape
    lap = np.array(
        [
            [luma[i - 1, j] + luma[i + 1, j] + luma[i, j - 1] + luma[i, j + 1] - 4 * luma[i, j] for j in range(1, w - 1)]
            for i in range(1, h - 1)
        ]
    )
    return float(lap.var())


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(3, 16, 19, 3), dtype=np.uint8)
    smooth = (np.cumsum(base.astype(np.float64), axis=2) % 256).astype(np.uint8)  # some structure
    noisy = np.clip(smooth.astype(int) + rng.integers(-30, 31, size=smooth.shape), 0, 255).astype(np.uint8)
    return smooth, noisy


def test_psnr_matches_float64_reference(frames):
    a, b = frames
    values = psnr(a, b)
    assert values.dtype == torch.float64 and values.shape == (3,)
    for n in range(3):
        assert float(values[n]) == pytest.approx(_psnr_reference(a[n], b[n]), rel=1e-12)


def test_psnr_analytic_cases():
    a = np.full((2, 8, 8, 3), 100, dtype=np.uint8)
    b = a + np.uint8(5)
    assert float(psnr(a, b)[0]) == pytest.approx(20 * math.log10(255 / 5))
    assert torch.all(psnr(a, a) == PSNR_CAP_DB)  # identical frames: the cap, not infinity
    floats = torch.full((1, 4, 4, 1), 0.5, dtype=torch.float64)
    assert float(psnr(floats, floats + 0.1, data_range=1.0)[0]) == pytest.approx(20.0)


def test_ssim_matches_naive_float64_reference(frames):
    a, b = frames
    values = ssim(a, b)
    for n in range(3):
        assert float(values[n]) == pytest.approx(_ssim_reference(a[n], b[n]), abs=2e-6)


def test_ssim_analytic_cases():
    a = np.full((1, 20, 20, 3), 64, dtype=np.uint8)
    b = np.full((1, 20, 20, 3), 192, dtype=np.uint8)
    # flat images: the structure term is (0 + C2) / (0 + C2) = 1, only the luminance term is left
    ma, mb, c1 = 64 / 255, 192 / 255, 0.01**2
    assert float(ssim(a, b)[0]) == pytest.approx((2 * ma * mb + c1) / (ma**2 + mb**2 + c1), rel=1e-5)
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, size=(2, 24, 24, 3), dtype=np.uint8)
    assert torch.allclose(ssim(noise, noise), torch.ones(2, dtype=torch.float64), atol=1e-6)
    assert float(ssim(noise, 255 - noise)[0]) < 0  # anti-correlated structure


def test_metrics_take_single_images_and_tensors(frames):
    a, b = frames
    single = ssim(a[0], b[0])
    assert single.shape == (1,)
    assert float(single[0]) == pytest.approx(float(ssim(torch.from_numpy(a), torch.from_numpy(b))[0]), abs=1e-7)


def test_sharpness_matches_loop_reference_and_is_zero_on_ramps(frames):
    a, _ = frames
    values = sharpness(a)
    for n in range(3):
        assert float(values[n]) == pytest.approx(_sharpness_reference(a[n]), rel=1e-9)
    ramp = np.broadcast_to(np.arange(32, dtype=np.uint8)[None, :, None] * 4, (12, 32, 3))
    assert float(sharpness(ramp)[0]) == pytest.approx(0.0, abs=1e-12)  # the Laplacian of a linear ramp is 0


def test_metric_inputs_are_checked(frames):
    a, b = frames
    with pytest.raises(UserInputError, match="different shapes"):
        psnr(a, b[:, :8])
    with pytest.raises(UserInputError, match="at least 11x11"):
        ssim(a[:, :8, :8], b[:, :8, :8])
    with pytest.raises(UserInputError, match=r"\(F, H, W, C\)"):
        psnr(a[0, 0], b[0, 0])
