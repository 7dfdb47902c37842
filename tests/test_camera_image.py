"""Image preparation and intrinsics: analytic projections, a rendered dot that must land where the
adjusted intrinsics say, frame-count snapping."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from sanawm.camera import (
    adjust_intrinsics_for_resize_crop,
    default_intrinsics,
    plan_resize_crop,
    prepare_image,
    snap_frame_count,
)
from sanawm.errors import UserInputError


def _project(k, points):
    fx, fy, cx, cy = [float(v) for v in k]
    return np.stack([fx * points[:, 0] / points[:, 2] + cx, fy * points[:, 1] / points[:, 2] + cy], axis=-1)


def test_default_intrinsics_field_of_view():
    k = default_intrinsics((90, 160), fov_deg=90.0)
    np.testing.assert_allclose(k.numpy(), [80.0, 80.0, 80.0, 45.0], rtol=1e-6)
    # a point on the edge of a 60 degree horizontal field of view projects onto the image border
    k = default_intrinsics((90, 160))
    half = math.radians(30.0)
    uv = _project(k, np.array([[math.sin(half), 0.0, math.cos(half)], [-math.sin(half), 0.0, math.cos(half)]]))
    np.testing.assert_allclose(uv, [[160.0, 45.0], [0.0, 45.0]], atol=1e-4)


@pytest.mark.parametrize("fov", [0.0, 180.0, -5.0, float("nan"), "60"])
def test_default_intrinsics_rejects_bad_fov(fov):
    with pytest.raises(UserInputError, match="field of view"):
        default_intrinsics((64, 64), fov)


@pytest.mark.parametrize(
    "n, stride, want", [(1, 8, 1), (8, 8, 1), (9, 8, 9), (16, 8, 9), (17, 8, 17), (160, 8, 153), (7, 4, 5), (5, 4, 5)]
)
def test_snap_frame_count_rounds_down(n, stride, want):
    assert snap_frame_count(n, stride) == want


def test_snap_frame_count_nearest_is_diffusers_rule():
    cam_utils = pytest.importorskip("diffusers.pipelines.sana_wm.cam_utils")
    cases = 0
    for stride in (4, 8):
        for n in range(1, 60):
            for bound in (None, n, n + 1, n + 3, n + stride, n + 20):
                want = cam_utils.snap_num_frames(n, stride, upper_bound=bound)
                assert snap_frame_count(n, stride, "nearest", upper_bound=bound) == want, (n, stride, bound)
                cases += want != snap_frame_count(n, stride)  # where it differs from rounding down
    assert cases > 100
    # hand-checked: 13 -> 17 (nearer), 12 -> 9 (nearer), 13 -> 9 when only 16 poses exist
    assert [snap_frame_count(13, 8, "nearest"), snap_frame_count(12, 8, "nearest")] == [17, 9]
    assert snap_frame_count(13, 8, "nearest", upper_bound=16) == 9
    with pytest.raises(UserInputError, match="unknown frame rounding"):
        snap_frame_count(9, 8, "up")


@pytest.mark.parametrize("n", [0, -3, 2.5, True, "9"])
def test_snap_frame_count_rejects(n):
    with pytest.raises(UserInputError, match="frame count"):
        snap_frame_count(n)


def test_plan_and_crop_offsets_analytic():
    plan = plan_resize_crop((720, 1280), (704, 1280))
    assert plan.resized_size == (720, 1280) and plan.offset == (8, 0)
    k = adjust_intrinsics_for_resize_crop([1000.0, 1000.0, 640.0, 360.0], (720, 1280), (704, 1280))
    np.testing.assert_allclose(k.numpy(), [1000.0, 1000.0, 640.0, 352.0])
    # halving: a pure scale in corner-origin coordinates, per-frame input keeps its shape
    k2 = adjust_intrinsics_for_resize_crop(torch.tensor([[800.0, 700.0, 320.0, 240.0]] * 3), (480, 640), (240, 320))
    np.testing.assert_allclose(k2.numpy(), [[400.0, 350.0, 160.0, 120.0]] * 3)


def test_points_project_to_same_normalised_place_after_crop():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform(-0.3, 0.3, (20, 2)), rng.uniform(1.0, 3.0, (20, 1))], axis=1)
    k_src = np.array([420.0, 410.0, 333.0, 251.0])
    src, dst = (500, 700), (128, 96)
    plan = plan_resize_crop(src, dst)
    k_dst = adjust_intrinsics_for_resize_crop(k_src, src, dst).double().numpy()
    uv_src, uv_dst = _project(k_src, points), _project(k_dst, points)
    scale = np.array(plan.resized_size[::-1]) / np.array(src[::-1])
    expected = uv_src * scale - np.array(plan.offset[::-1])
    np.testing.assert_allclose(uv_dst, expected, atol=1e-6)
    assert plan.resized_size == (128, round(700 * 128 / 500)) and plan.offset == (0, (179 - 96) // 2)


def test_rendered_dot_lands_where_the_adjusted_intrinsics_project():
    src_h, src_w = 300, 400
    k_src = np.array([350.0, 350.0, 200.0, 150.0])
    point = np.array([[0.21, -0.08, 1.0]])
    u, v = _project(k_src, point)[0]
    # Draw a 12x12 white square centred on (u, v) in corner-origin coordinates.
    img = np.zeros((src_h, src_w, 3), np.uint8)
    cols, rows = np.arange(src_w) + 0.5, np.arange(src_h) + 0.5
    mask = (np.abs(rows[:, None] - v) < 6) & (np.abs(cols[None, :] - u) < 6)
    img[mask] = 255
    out, plan = prepare_image(img, (96, 96))
    assert out.size == (96, 96) and out.mode == "RGB"
    weights = np.asarray(out, dtype=np.float64)[..., 0].clip(0)
    ys, xs = np.mgrid[0:96, 0:96] + 0.5
    centroid = np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()
    want = _project(plan.apply(k_src).double().numpy(), point)[0]
    # 0.15 px: a pixel-centre-origin mix-up would be off by 0.5 * (1 - 0.32) = 0.34 px here
    np.testing.assert_allclose(centroid, want, atol=0.15)


def test_prepare_image_inputs(tmp_path):
    img = Image.fromarray(np.full((50, 80, 3), 7, np.uint8))
    path = tmp_path / "img.png"
    img.save(path)
    for source in (img, path, str(path), np.asarray(img)):
        out, plan = prepare_image(source, (32, 32))
        assert out.size == (32, 32) and plan.src_size == (50, 80)
    with pytest.raises(UserInputError, match="uint8"):
        prepare_image(np.zeros((4, 4), np.float32), (2, 2))
    with pytest.raises(UserInputError, match="PIL image"):
        prepare_image(42, (2, 2))
    with pytest.raises(UserInputError, match="target image size"):
        prepare_image(img, (0, 32))
    with pytest.raises(UserInputError, match="intrinsics"):
        adjust_intrinsics_for_resize_crop([1.0, 2.0, 3.0], (10, 10), (5, 5))
