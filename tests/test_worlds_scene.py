"""World generation and free-space queries: determinism, signed distances, start positions."""

import math

import numpy as np
import pytest
import torch

from sanawm.errors import UserInputError
from sanawm.worlds import KINDS, Lighting, WorldBuilder, make_world, render
from sanawm.worlds.primitives import PRIMITIVE_TYPES
from sanawm.worlds.textures import value_noise

LIGHT = Lighting((0.0, -1.0, 0.0), (1.0, 1.0, 1.0), 0.5, 0.5, True, (0.4, 0.5, 0.9), (0.8, 0.8, 0.9), 0.01)


def rot_y(a):
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def _tensors(world):
    out = {"materials": world.materials}
    out.update({name: prims for name, prims in world.primitive_sets()})
    return {f"{k}.{f}": getattr(v, f) for k, v in out.items() for f in v.__dataclass_fields__}


def test_make_world_is_deterministic_and_seed_picks_kind():
    kinds_seen = set()
    for seed in range(12):
        world = make_world(seed)
        kinds_seen.add(world.kind)
        again = make_world(seed, kind=world.kind)
        assert world.lighting == again.lighting and world.bounds == again.bounds
        for name, tensor in _tensors(world).items():
            assert torch.equal(tensor, _tensors(again)[name]), name
    assert kinds_seen == set(KINDS)
    a, b = _tensors(make_world(0, "room")), _tensors(make_world(1, "room"))
    assert not torch.equal(a["materials.color_a"][:2], b["materials.color_a"][:2])


def test_make_world_rejects_bad_arguments():
    with pytest.raises(UserInputError, match="seed"):
        make_world(-1)
    with pytest.raises(UserInputError, match="seed"):
        make_world(1.5)
    with pytest.raises(UserInputError, match="kind 'castle'"):
        make_world(0, "castle")


@pytest.mark.parametrize("kind", KINDS)
def test_generated_worlds_start_free_and_render(kind):
    for seed in range(3):
        world = make_world(seed, kind)
        assert float(world.free_space_distance(torch.zeros(3))) >= 0.6
        assert bool(world.in_bounds(torch.zeros(3), margin=1.0))
        assert world.floor_y > 1.0 and world.num_primitives > 10
        # All kinds put the ground at +floor_y: a ray straight down hits it at that distance.
        assert float(world.ray_distance(torch.zeros(1, 3), torch.tensor([[0.0, 1.0, 0.0]]))) == pytest.approx(
            world.floor_y, abs=0.2  # (a flat marking or pavement may sit a few cm above the ground)
        )
    frames = render(world, torch.eye(4), torch.tensor([12.0, 12.0, 12.0, 8.0]), (16, 24), as_uint8=False)
    assert torch.isfinite(frames).all() and frames.std() > 0.02


def _closest_on_box(p_local, half):
    """Distance from a local-frame point to an axis-aligned box, by clamping (outside) or the nearest face (inside)."""
    q = np.clip(p_local, -half, half)
    if np.any(np.abs(p_local) > half):
        return np.linalg.norm(p_local - q)
    return -np.min(half - np.abs(p_local))


def test_free_space_distance_matches_closed_forms():
    b = WorldBuilder()
    m = b.material((0.5, 0.5, 0.5))
    b.plane((0.0, -1.0, 0.0), -1.5, m)
    box_c, box_h, yaw = np.array([2.0, 0.0, 3.0]), np.array([0.5, 1.0, 0.3]), 0.7
    b.box(tuple(box_c), tuple(box_h), m, rot_y(yaw))
    b.sphere((-2.0, -0.5, 2.0), 0.6, m)
    b.cylinder((0.0, 0.0, -3.0), 0.4, 0.8, m)
    world = b.build("custom", 0, LIGHT, (-5, 5, -5, 5), 1.5)
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform(-4, 4, (200, 3)), box_c + rng.uniform(-1, 1, (50, 3))])
    got = world.free_space_distance(torch.tensor(points, dtype=torch.float32)).double().numpy()
    for p, d in zip(points, got):
        floor = 1.5 - p[1]
        box = _closest_on_box(rot_y(yaw).T @ (p - box_c), box_h)
        sphere = np.linalg.norm(p - np.array([-2.0, -0.5, 2.0])) - 0.6
        radial, axial = math.hypot(p[0], p[2] + 3.0) - 0.4, abs(p[1]) - 0.8
        cylinder = math.hypot(max(radial, 0), max(axial, 0)) + min(max(radial, axial), 0)
        assert d == pytest.approx(min(floor, box, sphere, cylinder), abs=1e-5)
    with pytest.raises(UserInputError, match="points"):
        world.free_space_distance(torch.zeros(4, 2))


def test_ray_distance_is_consistent_with_free_space():
    world = make_world(4, "corridor")
    rng = np.random.default_rng(1)
    origins = torch.tensor(rng.uniform(-1.0, 1.0, (64, 3)) * [1.0, 0.5, 8.0] + [0, 0, 8.0], dtype=torch.float32)
    dirs = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(64, 3)), dtype=torch.float32), dim=-1)
    clearance = world.free_space_distance(origins)
    free = clearance > 0
    t = world.ray_distance(origins, dirs)
    assert torch.isfinite(t[free]).all()  # the corridor is closed
    assert (t[free] >= clearance[free] - 1e-4).all()  # no surface is nearer than the clearance
    hits = origins + dirs * t[:, None]
    assert world.free_space_distance(hits[free]).abs().max() < 1e-3  # the hit lies on a surface


def test_shadow_casters_and_device_copy():
    world = make_world(2, "room")
    casters = world.shadow_casters()
    assert casters.planes.count == 0  # floor and ceiling never shadow
    assert 0 < casters.num_primitives < world.num_primitives
    for name in PRIMITIVE_TYPES:
        assert bool(getattr(casters, name).casts_shadow.all())
    assert world.to("cpu") is world


def test_value_noise_is_smooth_and_in_range():
    p = torch.rand(2000, 3) * 20 - 10
    n = value_noise(p)
    assert n.min() >= 0 and n.max() <= 1 and n.std() > 0.1
    near = value_noise(p + 1e-3)
    assert (near - n).abs().max() < 0.01  # continuous
    lattice = torch.tensor([[3.0, -2.0, 7.0]])
    assert torch.equal(value_noise(lattice), value_noise(lattice.clone()))
