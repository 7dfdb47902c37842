"""Renderer checks against float64 references: pinhole rays, analytic depths, projections,
batching, parallax, shadows, supersampling and texture filtering."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from sanawm.camera import action_to_c2w
from sanawm.errors import UserInputError
from sanawm.worlds import Lighting, WorldBuilder, camera_rays, make_world, render, trace
from sanawm.worlds.textures import CHECKER, _filtered_pulse, _filtered_square

FLAT = Lighting(
    to_light=(0.0, -1.0, 0.0), sun_color=(1.0, 1.0, 1.0), ambient=1.0, diffuse=0.0, shadows=False,
    sky_zenith=(0.0, 0.0, 1.0), sky_horizon=(0.0, 0.0, 1.0), fog_density=0.0,
)


def rot_y(a):
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def rot_x(a):
    return np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])


def pose(rotation=np.eye(3), position=(0.0, 0.0, 0.0)):
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = rotation, position
    return c2w


def pixel_dirs_f64(c2w, k, h, w):
    """Unnormalised world ray directions (H, W, 3) with camera z component 1, by naive loops."""
    fx, fy, cx, cy = k
    out = np.zeros((h, w, 3))
    for i in range(h):
        for j in range(w):
            out[i, j] = c2w[:3, :3] @ np.array([(j + 0.5 - cx) / fx, (i + 0.5 - cy) / fy, 1.0])
    return out


def test_camera_rays_match_pinhole():
    c2w = pose(rot_y(0.4) @ rot_x(-0.3), (1.0, -0.5, 2.0))
    k = np.array([20.0, 18.0, 7.0, 4.5])
    origins, dirs, length = camera_rays(torch.tensor(c2w[None], dtype=torch.float32),
                                        torch.tensor(k[None], dtype=torch.float32), (9, 13))
    ref = pixel_dirs_f64(c2w, k, 9, 13)
    np.testing.assert_allclose(dirs[0].numpy(), ref / np.linalg.norm(ref, axis=-1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(length[0].numpy(), np.linalg.norm(ref, axis=-1), rtol=1e-6)
    np.testing.assert_allclose(origins[0].numpy(), np.broadcast_to(c2w[:3, 3], (9, 13, 3)), atol=1e-6)


def test_camera_rays_agree_with_camera_module_convention():
    # sanawm.camera.plucker_rays samples the integer grid; the renderer samples pixel centres
    # (+0.5). Shifting the principal point by half a pixel must make them identical.
    from sanawm.camera import plucker_rays

    c2w = torch.tensor(pose(rot_y(-0.3) @ rot_x(0.2), (0.5, 0.1, -1.0)), dtype=torch.float32)[None]
    k = torch.tensor([[11.0, 12.0, 6.0, 5.0]])
    _, dirs, _ = camera_rays(c2w, k, (10, 12))
    shifted = k - torch.tensor([0.0, 0.0, 0.5, 0.5])
    torch.testing.assert_close(dirs, plucker_rays(c2w, shifted, 10, 12)[..., :3], atol=1e-6, rtol=0)


def test_floor_plane_depth_is_analytic():
    b = WorldBuilder()
    b.plane((0.0, -1.0, 0.0), -1.5, b.material((0.5, 0.5, 0.5), grain=0.0))  # floor at y = +1.5
    world = b.build("custom", 0, FLAT, (-5, 5, -5, 5), 1.5)
    c2w = pose(rot_y(0.5) @ rot_x(-0.35), (0.3, 0.2, -0.4))  # pitched down: floor and sky in view
    k = np.array([10.0, 10.0, 8.0, 6.0])
    out = trace(world, torch.tensor(c2w[None], dtype=torch.float32), torch.tensor(k, dtype=torch.float32), (12, 16))
    v = pixel_dirs_f64(c2w, k, 12, 16)
    with np.errstate(divide="ignore"):
        depth = (1.5 - 0.2) / v[..., 1]  # y(s) = 0.2 + s v_y reaches 1.5; z-depth = s since v_cam,z = 1
    depth[v[..., 1] <= 0] = np.inf
    assert np.isfinite(depth).any() and np.isinf(depth).any()
    np.testing.assert_allclose(out.depth[0].numpy(), depth, rtol=1e-5)
    np.testing.assert_array_equal(out.primitive[0].numpy(), np.where(np.isfinite(depth), 0, -1))
    sky = out.rgb[0][torch.from_numpy(~np.isfinite(depth))]
    np.testing.assert_allclose(sky.numpy(), np.broadcast_to([0.0, 0.0, 1.0], sky.shape), atol=1e-6)


def _ref_sphere(o, d, c, r):
    oc = o - c
    b, cc = d @ oc, oc @ oc - r * r
    disc = b * b - cc
    if disc < 0:
        return np.inf
    for t in (-b - math.sqrt(disc), -b + math.sqrt(disc)):
        if t > 1e-4:
            return t
    return np.inf


def _ref_box(o, d, c, half, rot):
    """Nearest hit over the six face rectangles (a different algorithm from the slab method)."""
    best = np.inf
    lo, ld = rot.T @ (o - c), rot.T @ d
    for axis in range(3):
        for sign in (-1, 1):
            if abs(ld[axis]) < 1e-15:
                continue
            t = (sign * half[axis] - lo[axis]) / ld[axis]
            p = lo + t * ld
            others = [a for a in range(3) if a != axis]
            if t > 1e-4 and all(abs(p[a]) <= half[a] for a in others):
                best = min(best, t)
    return best


def _ref_cylinder(o, d, c, r, hh, rot):
    lo, ld = rot.T @ (o - c), rot.T @ d
    best = np.inf
    a = ld[0] ** 2 + ld[2] ** 2
    if a > 1e-15:
        b = lo[0] * ld[0] + lo[2] * ld[2]
        cc = lo[0] ** 2 + lo[2] ** 2 - r * r
        disc = b * b - a * cc
        if disc >= 0:
            for t in ((-b - math.sqrt(disc)) / a, (-b + math.sqrt(disc)) / a):
                if t > 1e-4 and abs(lo[1] + t * ld[1]) <= hh:
                    best = min(best, t)
    if abs(ld[1]) > 1e-15:
        for cap in (-hh, hh):
            t = (cap - lo[1]) / ld[1]
            p = lo + t * ld
            if t > 1e-4 and p[0] ** 2 + p[2] ** 2 <= r * r:
                best = min(best, t)
    return best


def test_sphere_box_cylinder_depths_match_float64_reference():
    b = WorldBuilder()
    mat = b.material((0.6, 0.4, 0.2), grain=0.0)
    b.sphere((0.8, -0.2, 5.0), 0.9, mat)
    box_rot = rot_y(0.6) @ rot_x(0.2)
    b.box((-1.2, 0.3, 6.0), (0.7, 0.5, 0.4), mat, box_rot)
    cyl_rot = rot_y(-0.3) @ rot_x(0.5)
    b.cylinder((0.2, 0.9, 3.5), 0.35, 0.6, mat, cyl_rot)
    world = b.build("custom", 0, FLAT, (-5, 5, -5, 5), 1.5)
    c2w = pose(rot_y(0.05), (0.1, -0.1, 0.0))
    k = np.array([14.0, 14.0, 10.0, 8.0])
    h, w = 16, 20
    out = trace(world, torch.tensor(c2w[None], dtype=torch.float32), torch.tensor(k, dtype=torch.float32), (h, w))
    v = pixel_dirs_f64(c2w, k, h, w)
    o = c2w[:3, 3]
    ref_depth = np.full((h, w), np.inf)
    ref_id = np.full((h, w), -1)
    for i in range(h):
        for j in range(w):
            d = v[i, j] / np.linalg.norm(v[i, j])
            ts = [  # global ids: boxes come before spheres before cylinders
                _ref_box(o, d, np.array([-1.2, 0.3, 6.0]), np.array([0.7, 0.5, 0.4]), box_rot),
                _ref_sphere(o, d, np.array([0.8, -0.2, 5.0]), 0.9),
                _ref_cylinder(o, d, np.array([0.2, 0.9, 3.5]), 0.35, 0.6, cyl_rot),
            ]
            if np.isfinite(min(ts)):
                ref_id[i, j] = int(np.argmin(ts))
                ref_depth[i, j] = min(ts) / np.linalg.norm(v[i, j])
    got_id = out.primitive[0].numpy()
    assert {0, 1, 2} <= set(ref_id.ravel().tolist())  # every primitive is in view
    agree = got_id == ref_id
    assert agree.mean() > 0.98  # float32 vs float64 may disagree on a silhouette pixel or two
    both = agree & np.isfinite(ref_depth)
    np.testing.assert_allclose(out.depth[0].numpy()[both], ref_depth[both], rtol=1e-4)


def test_known_point_projects_to_expected_pixel():
    point = np.array([0.7, -0.4, 4.0])
    b = WorldBuilder()
    b.sphere(tuple(point), 0.04, b.material((1.0, 1.0, 1.0), grain=0.0))
    world = b.build("custom", 0, FLAT, (-5, 5, -5, 5), 1.5)
    c2w = pose(rot_y(0.25) @ rot_x(0.1), (0.2, 0.1, -0.5))
    k = np.array([120.0, 110.0, 40.0, 30.0])
    cam = np.linalg.inv(c2w) @ np.append(point, 1.0)
    u, v = k[0] * cam[0] / cam[2] + k[2], k[1] * cam[1] / cam[2] + k[3]  # continuous coordinates
    out = trace(world, torch.tensor(c2w, dtype=torch.float32), torch.tensor(k, dtype=torch.float32), (60, 80))
    mask = out.primitive[0].numpy() == 0
    assert mask[int(v), int(u)]  # the pixel whose square contains the projection sees the sphere
    rows, cols = np.nonzero(mask)
    assert mask.sum() < 30
    # Pixel centres are at +0.5: the centroid of the tiny disc lands on the projection.
    assert abs(cols.mean() + 0.5 - u) < 0.5 and abs(rows.mean() + 0.5 - v) < 0.5


def test_batch_equals_one_by_one_and_chunking_does_not_matter():
    world = make_world(2, "street")
    c2w = torch.stack([torch.tensor(pose(rot_y(a), (0.3 * a, 0.0, a)), dtype=torch.float32) for a in (0.0, 0.7, -1.1)])
    k = torch.tensor([[20.0, 20.0, 12.0, 8.0], [18.0, 22.0, 12.0, 8.0], [25.0, 25.0, 11.0, 9.0]])
    batch = trace(world, c2w, k, (16, 24))
    for i in range(3):
        one = trace(world, c2w[i], k[i], (16, 24))
        torch.testing.assert_close(one.rgb[0], batch.rgb[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(one.depth[0], batch.depth[i])
        torch.testing.assert_close(one.primitive[0], batch.primitive[i])
    small = trace(world, c2w, k, (16, 24), chunk_elements=1024)  # many chunks
    torch.testing.assert_close(small.rgb, batch.rgb, atol=1e-5, rtol=0)
    torch.testing.assert_close(small.primitive, batch.primitive)


def _centroid_column(primitive: torch.Tensor, pid: int) -> float:
    cols = torch.nonzero(primitive == pid)[:, 1].double()
    return float(cols.mean()) + 0.5


def test_parallax_near_box_moves_more_than_far_box():
    b = WorldBuilder()
    b.box((0.0, 0.0, 20.5), (30.0, 30.0, 0.5), b.material((0.3, 0.3, 0.3)))  # far wall
    # Thin boxes facing the camera: their images translate rigidly by fx * baseline / depth.
    b.box((0.5, 0.0, 2.0), (0.15, 0.15, 0.005), b.material((0.9, 0.1, 0.1)))  # near, id 1
    b.box((-1.5, 0.0, 12.0), (0.5, 0.5, 0.005), b.material((0.1, 0.9, 0.1)))  # far, id 2
    world = b.build("custom", 0, FLAT, (-5, 5, -5, 5), 1.5)
    fx = 200.0
    k = torch.tensor([fx, fx, 128.0, 32.0])
    baseline = 0.1
    c2w = torch.tensor(np.stack([pose(), pose(position=(baseline, 0.0, 0.0))]), dtype=torch.float32)
    out = trace(world, c2w, k, (64, 256))
    near = _centroid_column(out.primitive[0], 1) - _centroid_column(out.primitive[1], 1)
    far = _centroid_column(out.primitive[0], 2) - _centroid_column(out.primitive[1], 2)
    # Moving right, everything shifts left in the image; pixel quantisation blurs it by < 0.6 px.
    assert near > 3 * far > 0
    assert near == pytest.approx(fx * baseline / (2.0 - 0.005), abs=0.6)
    assert far == pytest.approx(fx * baseline / (12.0 - 0.005), abs=0.6)


def test_hard_shadow_under_sphere():
    lighting = Lighting((0.0, -1.0, 0.0), (1.0, 1.0, 1.0), 0.3, 0.7, True, (0.5, 0.6, 0.9), (0.8, 0.8, 0.8), 0.0)
    b = WorldBuilder()
    b.plane((0.0, -1.0, 0.0), -1.5, b.material((0.5, 0.5, 0.5), grain=0.0))
    b.sphere((0.0, 0.5, 4.0), 0.4, b.material((0.9, 0.9, 0.9), grain=0.0))  # floats 0.6 m above the floor
    world = b.build("custom", 0, lighting, (-5, 5, -5, 5), 1.5)
    c2w = torch.tensor(pose(rot_x(-0.5)), dtype=torch.float32)  # looking down at the floor
    k = torch.tensor([60.0, 60.0, 32.0, 24.0])

    def floor_pixel(x, z):
        cam = np.linalg.inv(c2w.double().numpy()) @ np.array([x, 1.5, z, 1.0])
        return int(k[1] * cam[1] / cam[2] + k[3]), int(k[0] * cam[0] / cam[2] + k[2])

    lit = render(world, c2w, k, (48, 64), as_uint8=False)[0]
    dark = floor_pixel(0.0, 4.0)  # straight below the sphere centre: in its shadow...
    bright = floor_pixel(1.0, 4.0)  # ...and 1 m to the side: in the sun
    # Grey 0.5 floor, upward normal: hemisphere term 1.0; ambient 0.3 (+ diffuse 0.7 in the sun).
    assert lit[bright].tolist() == pytest.approx([0.5] * 3, abs=1e-4)
    assert lit[dark].tolist() == pytest.approx([0.15] * 3, abs=1e-4)
    flat = b.build("custom", 0, dataclasses.replace(lighting, shadows=False), (-5, 5, -5, 5), 1.5)
    assert render(flat, c2w, k, (48, 64), as_uint8=False)[0][dark].tolist() == pytest.approx([0.5] * 3, abs=1e-4)


def test_output_types_and_supersampling_of_an_edge():
    b = WorldBuilder()
    b.box((-5.0, 0.0, 5.5), (5.0, 5.0, 0.5), b.material((1.0, 0.0, 0.0), grain=0.0))  # right face at x = 0
    world = b.build("custom", 0, FLAT, (-5, 5, -5, 5), 1.5)
    k = torch.tensor([8.0, 8.0, 4.5, 3.0])  # the edge x = 0 projects to u = 4.5: the middle of column 4
    c2w = torch.eye(4)
    f = render(world, c2w, k, (6, 8), as_uint8=False)
    u8 = render(world, c2w, k, (6, 8))
    assert f.dtype == torch.float32 and u8.dtype == torch.uint8 and u8.shape == (1, 6, 8, 3)
    torch.testing.assert_close(u8, (f * 255 + 0.5).to(torch.uint8))
    ss = render(world, c2w, k, (6, 8), supersample=2, as_uint8=False)[0]
    # Columns 0-3 see the box (red, hemisphere term 0.85 on a side face), 5-7 the blue sky;
    # column 4 is half and half with 2 x 2 samples. Rows 0-2 look above the horizon (the sky
    # darkens below it).
    red, blue = np.array([0.85, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(ss[:, :4].numpy(), np.broadcast_to(red, (6, 4, 3)), atol=1e-5)
    np.testing.assert_allclose(ss[:3, 5:].numpy(), np.broadcast_to(blue, (3, 3, 3)), atol=1e-5)
    np.testing.assert_allclose(ss[:3, 4].numpy(), np.broadcast_to((red + blue) / 2, (3, 3)), atol=1e-5)


def test_supersampled_frames_are_traced_in_groups_as_one_trace_would():
    """render(supersample=s) traces F / s^2 frames at a time (memory of a one-ray render); each
    frame is the s x s average of one (s H) x (s W) trace at intrinsics scaled by s."""
    world = make_world(4, "room")
    c2w = action_to_c2w("w-4,l-4")  # 9 frames: 5 groups (of 2, the last of 1) at s = 2, 9 of 1 at s = 3
    k = torch.tensor([20.0, 20.0, 12.0, 8.0]).expand(len(c2w), 4)
    for s in (2, 3):
        whole = trace(world, c2w, k * s, (16 * s, 24 * s)).rgb
        expected = whole.reshape(len(c2w), 16, s, 24, s, 3).mean(dim=(2, 4))
        torch.testing.assert_close(render(world, c2w, k, (16, 24), supersample=s, as_uint8=False), expected)


def test_checker_texture_is_view_consistent():
    b = WorldBuilder()
    white, black = (0.9, 0.9, 0.9), (0.1, 0.1, 0.1)
    b.box((0.0, 0.0, 6.5), (20.0, 20.0, 0.5), b.material(white, black, CHECKER, scale=1.0, grain=0.0))
    world = b.build("custom", 0, FLAT, (-5, 5, -5, 5), 1.5)
    offset = world.materials.offset[0].double().numpy()
    cams = [pose(rot_y(0.2), (-1.0, 0.0, 0.0)), pose(rot_y(-0.25), (1.3, 0.2, 0.4))]
    k = np.array([40.0, 40.0, 32.0, 24.0])
    frames = render(world, torch.tensor(np.stack(cams), dtype=torch.float32), torch.tensor(k, dtype=torch.float32),
                    (48, 64), as_uint8=False)
    checked = 0
    for cell_x in range(-2, 3):
        for cell_y in range(-1, 2):
            # Centre of a checker cell on the wall's front face z = 6 (texture coordinates are
            # world coordinates plus the material offset, in cells of 1 m).
            p = np.array([cell_x + 0.5 - offset[0], cell_y + 0.5 - offset[1], 6.0])
            parity = (math.floor(p[0] + offset[0]) + math.floor(p[1] + offset[1]) + math.floor(6.0 + offset[2])) % 2
            expected = np.array(white if parity == 0 else black) * 0.85  # side face: hemisphere 0.85
            seen = []
            for f, c2w in enumerate(cams):
                cam = np.linalg.inv(c2w) @ np.append(p, 1.0)
                u, v = k[0] * cam[0] / cam[2] + k[2], k[1] * cam[1] / cam[2] + k[3]
                if 0 <= u < 64 and 0 <= v < 48:
                    seen.append(frames[f, int(v), int(u)].numpy())
            for colour in seen:
                np.testing.assert_allclose(colour, expected, atol=0.02)
            checked += len(seen) == 2
    assert checked >= 6


@pytest.mark.parametrize("x0, width", [(0.3, 0.05), (1.7, 0.6), (-2.2, 1.3), (5.05, 3.1)])
def test_filtered_waves_are_box_averages(x0, width):
    xs = x0 + np.linspace(-width / 2, width / 2, 200001)
    square = np.where(np.mod(xs, 2.0) < 1.0, 1.0, -1.0).mean()
    pulse = (np.mod(xs, 1.0) < 0.16).mean()
    x, w = torch.tensor([x0], dtype=torch.float64), torch.tensor([width], dtype=torch.float64)
    assert float(_filtered_square(x, w)) == pytest.approx(square, abs=1e-4)
    assert float(_filtered_pulse(x, w, 0.16)) == pytest.approx(pulse, abs=1e-4)


def test_render_rejects_bad_inputs():
    world = make_world(0, "room")
    k = torch.tensor([10.0, 10.0, 4.0, 4.0])
    with pytest.raises(UserInputError, match="c2w"):
        render(world, torch.eye(3), k, (8, 8))
    with pytest.raises(UserInputError, match="intrinsics"):
        render(world, torch.eye(4).repeat(2, 1, 1), torch.ones(3, 4), (8, 8))
    with pytest.raises(UserInputError, match="focal"):
        render(world, torch.eye(4), torch.tensor([0.0, 10.0, 4.0, 4.0]), (8, 8))
    with pytest.raises(UserInputError, match="image_size"):
        render(world, torch.eye(4), k, (8, 0))
    with pytest.raises(UserInputError, match="supersample"):
        render(world, torch.eye(4), k, (8, 8), supersample=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    world = make_world(5)
    c2w = torch.tensor(np.stack([pose(rot_y(a)) for a in (0.0, 1.0)]), dtype=torch.float32)
    k = torch.tensor([30.0, 30.0, 16.0, 12.0])
    cpu = trace(world, c2w, k, (24, 32))
    gpu = trace(world, c2w.cuda(), k.cuda(), (24, 32))
    assert (gpu.primitive.cpu() == cpu.primitive).float().mean() > 0.99
    assert (gpu.rgb.cpu() - cpu.rgb).abs().mean() < 1e-3
