"""pack_camera: the reference fixture, a naive per-pixel float64 loop, batching and errors."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from sanawm.camera import action_to_c2w, pack_camera
from sanawm.errors import UserInputError

DATA = Path(__file__).parent / "data" / "camera"
CASE = json.loads((DATA / "public_camera.json").read_text())["pack"]
TENSORS = load_file(DATA / "public_camera.safetensors")


def test_matches_reference_packing():
    size, stride = tuple(CASE["target_size_hw"]), tuple(CASE["vae_stride_t_h_w"])
    raymap, plucker = pack_camera(TENSORS["pack_c2w"], TENSORS["pack_K"], size, stride)
    assert raymap.shape == tuple(CASE["raymap_shape"]) and raymap.dtype == torch.float32
    assert plucker.shape == tuple(CASE["chunk_plucker_shape"]) and plucker.dtype == torch.float32
    np.testing.assert_allclose(raymap.numpy(), TENSORS["pack_raymap"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(plucker.numpy(), TENSORS["pack_chunk_plucker"], atol=1e-5, rtol=0)
    # the same from the action string and a single intrinsics row
    raymap2, plucker2 = pack_camera(action_to_c2w(CASE["action"]), CASE["intrinsics_pixels_fx_fy_cx_cy"], size)
    np.testing.assert_allclose(raymap2.numpy(), TENSORS["pack_raymap"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(plucker2.numpy(), TENSORS["pack_chunk_plucker"], atol=1e-5, rtol=0)


def _naive_pack(c2w, k, size, stride):
    """Explicit loops over latent frames, chunk frames and grid points, float64 numpy."""
    st, sh, sw = stride
    h, w = size[0] // sh, size[1] // sw
    frames = c2w.shape[0]
    rel = [np.linalg.inv(c2w[0]) @ c2w[f] for f in range(frames)]
    lat_k = [k[f] * [w / size[1], h / size[0], w / size[1], h / size[0]] for f in range(frames)]
    t_lat = (frames - 1) // st + 1
    raymap = np.zeros((t_lat, 20))
    plucker = np.zeros((6 * st, t_lat, h, w))
    for i in range(t_lat):
        raymap[i, :16] = rel[st * i].reshape(-1)
        raymap[i, 16:] = lat_k[st * i]
        for j in range(st):
            f = min(max(0, st * i - st + 1) + j, frames - 1)
            fx, fy, cx, cy = lat_k[f]
            for y in range(h):
                for x in range(w):
                    d = rel[f][:3, :3] @ np.array([(x - cx) / fx, (y - cy) / fy, 1.0])
                    d /= np.linalg.norm(d)
                    plucker[6 * j : 6 * j + 6, i, y, x] = np.concatenate([d, np.cross(rel[f][:3, 3], d)])
    return raymap, plucker


def _random_poses(rng, n):
    c2w = action_to_c2w("wl-3,di-4,sk-2,aj-3,ilw-5", 0.3, 7.0).double().numpy()[:n]
    anchor = np.eye(4)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    anchor[:3, :3] = q * np.sign(np.linalg.det(q))
    anchor[:3, 3] = rng.normal(size=3)
    return anchor @ c2w  # a non-identity first pose exercises the relative-pose step


def test_matches_naive_loops_with_other_stride_and_per_frame_intrinsics():
    rng = np.random.default_rng(0)
    c2w = _random_poses(rng, 13)
    k = np.stack([[50 + f, 45 - f, 30 + 0.5 * f, 17 - 0.3 * f] for f in range(13)])
    raymap, plucker = pack_camera(c2w, k, (32, 48), (4, 8, 8))
    want_raymap, want_plucker = _naive_pack(c2w, k, (32, 48), (4, 8, 8))
    assert plucker.shape == (24, 4, 4, 6)
    np.testing.assert_allclose(raymap.numpy(), want_raymap, atol=2e-6)
    np.testing.assert_allclose(plucker.numpy(), want_plucker, atol=2e-6)


def test_batch_equals_one_by_one():
    rng = np.random.default_rng(1)
    c2w = np.stack([_random_poses(rng, 9), _random_poses(rng, 9)])
    k = np.array([[[40.0, 41.0, 24.0, 16.0]] * 9, [[30.0, 30.0, 20.0, 15.0]] * 9])
    raymap, plucker = pack_camera(c2w, k, (32, 48), (4, 8, 8))
    assert raymap.shape == (2, 3, 20) and plucker.shape == (2, 24, 3, 4, 6)
    for b in range(2):
        r, p = pack_camera(c2w[b], k[b, 0], (32, 48), (4, 8, 8))
        torch.testing.assert_close(raymap[b], r)
        torch.testing.assert_close(plucker[b], p)


def test_pure_forward_motion_moments():
    # Camera moving along +z: a ray's moment is o x d with o = (0, 0, z), independent of the look
    # direction's x/y except through d; the central-ray direction is exactly +z.
    c2w = action_to_c2w("w-8", 0.25).numpy()
    _, plucker = pack_camera(c2w, [64.0, 64.0, 64.0, 32.0], (64, 128), (8, 32, 32))
    # chunk of latent frame 1 = raw frames 1..8; the ray through grid point (x=2, y=1) is on-axis
    for j in range(8):
        d, m = plucker[6 * j : 6 * j + 3, 1, 1, 2], plucker[6 * j + 3 : 6 * j + 6, 1, 1, 2]
        torch.testing.assert_close(d, torch.tensor([0.0, 0.0, 1.0]))
        torch.testing.assert_close(m, torch.zeros(3), atol=1e-7, rtol=0)
    corner = plucker[:, 1, 0, 0].reshape(8, 6).double()
    z = 0.25 * torch.arange(1, 9, dtype=torch.float64)
    d = corner[:, :3]
    expected_m = torch.stack([-z * d[:, 1], z * d[:, 0], torch.zeros(8, dtype=torch.float64)], dim=-1)
    torch.testing.assert_close(corner[:, 3:], expected_m, atol=1e-6, rtol=0)
    assert math.isclose(float(d[0].norm()), 1.0, rel_tol=1e-6)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"c2w": np.tile(np.eye(4), (10, 1, 1))}, "8*k+1"),
        ({"image_size": (100, 192)}, "divisible"),
        ({"intrinsics": np.ones((5, 4))}, "intrinsics"),
        ({"intrinsics": [0.0, 1.0, 1.0, 1.0]}, "positive"),
        ({"vae_stride": (8, 32)}, "vae_stride"),
        ({"c2w": np.tile(np.eye(4), (9, 1, 1)) * 2}, "bottom row"),
    ],
)
def test_errors(kwargs, fragment):
    args = {"c2w": np.tile(np.eye(4), (9, 1, 1)), "intrinsics": [1.0, 1.0, 1.0, 1.0], "image_size": (96, 192)}
    args.update(kwargs)
    with pytest.raises(UserInputError) as info:
        pack_camera(**args)
    assert fragment in str(info.value)
