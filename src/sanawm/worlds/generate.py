"""Procedural scene generation: `make_world(seed, kind)` builds a room, corridor, street or terrain.

Layout rules shared by all kinds (world up is -y, metres):

* The ground is the plane y = ``floor_y`` (the eye height, 1.4-1.8 m): cameras made by
  `sanawm.worlds.trajectories` fly at y = 0 and start at the origin looking along +z.
* Nothing is placed within `CLEAR_RADIUS` of the origin (in x-z; flat wall decorations may come
  0.06 m closer), and ceilings are at least 0.65 m above it, so the start is always free.
* The same seed gives the same world; ``make_world(seed)`` picks the kind from the seed and
  equals ``make_world(seed, kind=that_kind)``.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
import torch

from sanawm.errors import UserInputError
from sanawm.worlds.primitives import Boxes, Cylinders, Planes, Spheres
from sanawm.worlds.scene import Lighting, World
from sanawm.worlds.textures import BRICKS, CHECKER, NOISE, SOLID, STRIPES, Materials

KINDS = ("room", "corridor", "street", "terrain")
CLEAR_RADIUS = 1.5  # metres kept free around the origin (x-z distance to any object)


def _rot_y(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class WorldBuilder:
    """Collects primitives and materials as Python lists, then packs them into a `World`.

    Used by the generators below, and for hand-made scenes (tests, docs)::

        b = WorldBuilder()
        red = b.material((0.8, 0.1, 0.1))
        b.sphere((0.0, 0.0, 5.0), 1.0, red)
        world = b.build("custom", 0, lighting, bounds=(-5, 5, -5, 5), floor_y=1.5)

    ``rng`` draws random colours and texture offsets (a fixed default keeps hand-made scenes
    deterministic).
    """

    def __init__(self, rng: np.random.Generator | None = None):
        self.rng = np.random.default_rng(0) if rng is None else rng
        self.mats: list[dict] = []
        self.prims: dict[str, list[dict]] = {"planes": [], "boxes": [], "spheres": [], "cylinders": []}

    # -- colours and materials -------------------------------------------------------------
    def color(self, hue: float | None = None, sat: tuple = (0.15, 0.65), val: tuple = (0.35, 0.9)) -> tuple:
        rng = self.rng
        h = rng.uniform(0, 1) if hue is None else (hue + rng.normal(0, 0.04)) % 1.0
        return colorsys.hsv_to_rgb(h, rng.uniform(*sat), rng.uniform(*val))

    def material(
        self,
        color_a: tuple,
        color_b: tuple | None = None,
        pattern: int = SOLID,
        scale: float = 1.0,
        axis: tuple = (0.0, 1.0, 0.0),
        grain: float = 0.08,
    ) -> int:
        """Add a material; returns its index. ``color_b`` defaults to a darker ``color_a``."""
        if color_b is None:
            color_b = tuple(0.55 * c for c in color_a)
        axis = np.asarray(axis, dtype=np.float64)
        self.mats.append(
            dict(
                color_a=color_a,
                color_b=color_b,
                pattern=pattern,
                scale=scale,
                offset=tuple(self.rng.uniform(0, scale, 3)),
                axis=tuple(axis / np.linalg.norm(axis)),
                grain=grain,
            )
        )
        return len(self.mats) - 1

    def random_material(self, hue: float | None = None, patterns: tuple = (SOLID, CHECKER, STRIPES, NOISE)) -> int:
        rng = self.rng
        pattern = int(rng.choice(patterns))
        a = self.color(hue)
        b = self.color(None if rng.uniform() < 0.5 else hue, val=(0.2, 0.95))
        axis = (0.0, 1.0, 0.0) if rng.uniform() < 0.5 else tuple(rng.normal(size=3))
        scale = {SOLID: 1.0, CHECKER: rng.uniform(0.15, 0.6), STRIPES: rng.uniform(0.08, 0.4),
                 BRICKS: rng.uniform(0.3, 0.6), NOISE: rng.uniform(0.2, 1.2)}[pattern]
        return self.material(a, b, pattern, scale, axis)

    # -- primitives ------------------------------------------------------------------------
    def plane(self, normal, offset: float, mat: int) -> None:
        # Planes are floors and ceilings: they never cast shadows (a ceiling would darken the room).
        self.prims["planes"].append(dict(normal=normal, offset=offset, material=mat, casts_shadow=False))

    def box(self, center, half_size, mat: int, rotation=None, shadow: bool = True) -> None:
        rot = np.eye(3) if rotation is None else rotation
        self.prims["boxes"].append(
            dict(center=center, half_size=half_size, rotation=rot, material=mat, casts_shadow=shadow)
        )

    def sphere(self, center, radius: float, mat: int, shadow: bool = True) -> None:
        self.prims["spheres"].append(dict(center=center, radius=radius, material=mat, casts_shadow=shadow))

    def cylinder(self, center, radius: float, half_height: float, mat: int, rotation=None, shadow: bool = True) -> None:
        rot = np.eye(3) if rotation is None else rotation
        self.prims["cylinders"].append(
            dict(center=center, radius=radius, half_height=half_height, rotation=rot, material=mat, casts_shadow=shadow)
        )

    # -- packing ---------------------------------------------------------------------------
    def build(self, kind: str, seed: int, lighting: Lighting, bounds: tuple, floor_y: float) -> World:
        def column(items: list[dict], key: str, shape: tuple, dtype=torch.float32) -> torch.Tensor:
            if not items:
                return torch.zeros((0, *shape), dtype=dtype)
            return torch.tensor(np.array([np.asarray(it[key], dtype=np.float64) for it in items]), dtype=dtype)

        def common(items):
            return dict(
                material=column(items, "material", (), torch.long),
                casts_shadow=column(items, "casts_shadow", (), torch.bool),
            )

        p = self.prims
        planes = Planes(**common(p["planes"]), normal=column(p["planes"], "normal", (3,)),
                        offset=column(p["planes"], "offset", ()))
        boxes = Boxes(**common(p["boxes"]), center=column(p["boxes"], "center", (3,)),
                      rotation=column(p["boxes"], "rotation", (3, 3)), half_size=column(p["boxes"], "half_size", (3,)))
        spheres = Spheres(**common(p["spheres"]), center=column(p["spheres"], "center", (3,)),
                          radius=column(p["spheres"], "radius", ()))
        cylinders = Cylinders(**common(p["cylinders"]), center=column(p["cylinders"], "center", (3,)),
                              rotation=column(p["cylinders"], "rotation", (3, 3)),
                              radius=column(p["cylinders"], "radius", ()),
                              half_height=column(p["cylinders"], "half_height", ()))
        m = self.mats
        materials = Materials(
            color_a=column(m, "color_a", (3,)),
            color_b=column(m, "color_b", (3,)),
            pattern=column(m, "pattern", (), torch.long),
            scale=column(m, "scale", ()),
            offset=column(m, "offset", (3,)),
            axis=column(m, "axis", (3,)),
            grain=column(m, "grain", ()),
        )
        return World(kind, seed, planes, boxes, spheres, cylinders, materials, lighting,
                     tuple(float(b) for b in bounds), float(floor_y))


def _clear_of_origin(x: float, z: float, radius: float) -> bool:
    """Whether an object of x-z footprint radius ``radius`` at (x, z) keeps the origin free."""
    return math.hypot(x, z) - radius >= CLEAR_RADIUS


def _sun(rng: np.random.Generator, elevation_deg: tuple) -> tuple:
    elevation = math.radians(rng.uniform(*elevation_deg))
    azimuth = rng.uniform(0, 2 * math.pi)
    c = math.cos(elevation)
    return (c * math.sin(azimuth), -math.sin(elevation), c * math.cos(azimuth))  # up is -y


def _indoor_lighting(rng: np.random.Generator, b: WorldBuilder) -> Lighting:
    haze = b.color(sat=(0.05, 0.2), val=(0.5, 0.75))
    return Lighting(
        to_light=_sun(rng, (50, 80)),
        sun_color=(1.0, 0.96, 0.88),
        ambient=float(rng.uniform(0.6, 0.75)),
        diffuse=float(rng.uniform(0.4, 0.55)),
        shadows=True,
        sky_zenith=haze,
        sky_horizon=haze,
        fog_density=float(rng.uniform(0.01, 0.03)),
    )


def _outdoor_lighting(rng: np.random.Generator) -> Lighting:
    return Lighting(
        to_light=_sun(rng, (25, 65)),
        sun_color=(1.0, 0.95, 0.85),
        ambient=float(rng.uniform(0.35, 0.45)),
        diffuse=float(rng.uniform(0.65, 0.85)),
        shadows=True,
        sky_zenith=colorsys.hsv_to_rgb(rng.uniform(0.55, 0.63), rng.uniform(0.45, 0.7), rng.uniform(0.7, 0.9)),
        sky_horizon=colorsys.hsv_to_rgb(rng.uniform(0.55, 0.62), rng.uniform(0.08, 0.2), rng.uniform(0.85, 0.97)),
        fog_density=float(rng.uniform(0.004, 0.015)),
    )


def _floor_and_ceiling(b: WorldBuilder, floor_y: float, ceiling_y: float | None, hue: float) -> None:
    rng = b.rng
    floor_pattern = int(rng.choice([CHECKER, STRIPES, NOISE, BRICKS]))
    floor_mat = b.material(
        b.color(hue, val=(0.35, 0.8)), b.color(None, val=(0.2, 0.7)), floor_pattern,
        scale=float(rng.uniform(0.3, 0.9)), axis=(1.0, 0.0, 0.0) if rng.uniform() < 0.5 else (0.0, 0.0, 1.0),
    )
    b.plane((0.0, -1.0, 0.0), -floor_y, floor_mat)  # free where y < floor_y
    if ceiling_y is not None:
        ceiling_mat = b.material(b.color(hue, sat=(0.0, 0.15), val=(0.7, 0.95)), pattern=NOISE, scale=1.5)
        b.plane((0.0, 1.0, 0.0), ceiling_y, ceiling_mat)  # free where y > ceiling_y


def _wall_material(b: WorldBuilder, hue: float) -> int:
    rng = b.rng
    pattern = int(rng.choice([BRICKS, STRIPES, NOISE, SOLID, CHECKER]))
    a = b.color(hue, sat=(0.1, 0.5), val=(0.5, 0.9))
    if pattern == BRICKS:
        return b.material(a, b.color(None, sat=(0.0, 0.1), val=(0.75, 0.95)), BRICKS, float(rng.uniform(0.35, 0.6)))
    scale = {STRIPES: rng.uniform(0.1, 0.5), NOISE: rng.uniform(0.3, 1.0), SOLID: 1.0, CHECKER: rng.uniform(0.3, 0.8)}
    axis = (0.0, 1.0, 0.0) if rng.uniform() < 0.6 else (1.0, 0.0, 1.0)
    return b.material(a, b.color(hue, val=(0.3, 0.8)), pattern, float(scale[pattern]), axis)


def _panel(b: WorldBuilder, center: tuple, normal_axis: int, width: float, height: float) -> None:
    """A thin coloured rectangle (picture, door, window) on a wall facing along ``normal_axis`` (0=x, 2=z)."""
    half = [width / 2, height / 2, width / 2]
    half[normal_axis] = 0.03
    b.box(center, half, b.random_material(), shadow=False)


def _scatter_objects(b: WorldBuilder, floor_y: float, region: tuple, count: int, max_height: float,
                     hue: float | None = None) -> None:
    """Boxes (some yawed, some with a sphere or smaller box on top) and balls standing on the floor."""
    rng = b.rng
    x0, x1, z0, z1 = region
    placed = 0
    for _ in range(count * 20):
        if placed == count:
            break
        hx, hz = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.6)
        hy = rng.uniform(0.2, max_height / 2)
        x, z = rng.uniform(x0 + hx, x1 - hx), rng.uniform(z0 + hz, z1 - hz)
        if not _clear_of_origin(x, z, math.hypot(hx, hz)):
            continue
        placed += 1
        if rng.uniform() < 0.25:  # a ball on the floor instead of a box
            r = rng.uniform(0.15, 0.6)
            b.sphere((x, floor_y - r, z), r, b.random_material(hue))
            continue
        yaw = rng.uniform(0, math.pi / 2) if rng.uniform() < 0.6 else 0.0
        b.box((x, floor_y - hy, z), (hx, hy, hz), b.random_material(hue), _rot_y(yaw))
        top = floor_y - 2 * hy
        roll = rng.uniform()
        if roll < 0.3:  # something on top: visible occlusion edges at different depths
            r = rng.uniform(0.1, min(hx, hz))
            b.sphere((x, top - r, z), r, b.random_material())
        elif roll < 0.5:
            s = rng.uniform(0.1, min(hx, hz))
            b.box((x, top - s, z), (s, s, s), b.random_material(), _rot_y(rng.uniform(0, math.pi / 2)))


def _room(b: WorldBuilder) -> tuple[Lighting, tuple, float]:
    rng = b.rng
    floor_y = rng.uniform(1.4, 1.7)
    width, depth, height = rng.uniform(7, 12), rng.uniform(8, 14), rng.uniform(2.8, 4.0)
    x0 = -rng.uniform(0.35, 0.65) * width
    x1 = x0 + width
    z0 = -rng.uniform(2.0, 3.5)
    z1 = z0 + depth
    ceiling_y = floor_y - height
    hue = rng.uniform(0, 1)
    _floor_and_ceiling(b, floor_y, ceiling_y, hue)

    t = 0.2  # wall thickness
    mid_y = (floor_y + ceiling_y) / 2
    walls = [  # (centre, half size, normal axis, inner face coordinate, sign into the room)
        ((x0 - t / 2, mid_y, (z0 + z1) / 2), (t / 2, height / 2 + t, depth / 2 + t), 0, x0, 1),
        ((x1 + t / 2, mid_y, (z0 + z1) / 2), (t / 2, height / 2 + t, depth / 2 + t), 0, x1, -1),
        (((x0 + x1) / 2, mid_y, z0 - t / 2), (width / 2 + t, height / 2 + t, t / 2), 2, z0, 1),
        (((x0 + x1) / 2, mid_y, z1 + t / 2), (width / 2 + t, height / 2 + t, t / 2), 2, z1, -1),
    ]
    wall_mats = [_wall_material(b, hue), _wall_material(b, hue)]
    for i, (center, half, axis, face, sign) in enumerate(walls):
        b.box(center, half, wall_mats[i % 2 if rng.uniform() < 0.7 else rng.integers(2)], shadow=False)
        # Pictures / doors / windows along the wall.
        span = (z0, z1) if axis == 0 else (x0, x1)
        for _ in range(rng.integers(1, 4)):
            w, h = rng.uniform(0.5, 1.6), rng.uniform(0.5, 1.4)
            along = rng.uniform(span[0] + w, span[1] - w)
            c = [0.0, rng.uniform(-0.6, 0.3), 0.0]
            c[axis] = face + sign * 0.03
            c[2 - axis] = along
            _panel(b, tuple(c), axis, w, h)

    for _ in range(rng.integers(0, 4)):  # pillars, floor to ceiling
        x, z = rng.uniform(x0 + 0.8, x1 - 0.8), rng.uniform(z0 + 0.8, z1 - 0.8)
        r = rng.uniform(0.15, 0.35)
        if _clear_of_origin(x, z, r):
            mat = b.random_material(hue, (SOLID, STRIPES, NOISE))
            if rng.uniform() < 0.5:
                b.cylinder((x, mid_y, z), r, height / 2, mat)
            else:
                b.box((x, mid_y, z), (r, height / 2, r), mat, _rot_y(rng.uniform(0, math.pi / 2)))
    _scatter_objects(b, floor_y, (x0 + 0.2, x1 - 0.2, z0 + 0.2, z1 - 0.2), int(rng.integers(5, 11)), 1.8)
    return _indoor_lighting(rng, b), (x0, x1, z0, z1), floor_y


def _corridor(b: WorldBuilder) -> tuple[Lighting, tuple, float]:
    rng = b.rng
    floor_y = rng.uniform(1.4, 1.7)
    width, height, length = rng.uniform(2 * CLEAR_RADIUS, 4.5), rng.uniform(2.7, 3.6), rng.uniform(30, 50)
    z0, z1 = -3.0, length
    ceiling_y = floor_y - height
    mid_y = (floor_y + ceiling_y) / 2
    hue = rng.uniform(0, 1)
    _floor_and_ceiling(b, floor_y, ceiling_y, hue)
    t = 0.2
    half_w = width / 2
    wall_mats = [_wall_material(b, hue), _wall_material(b, hue)]
    for z_face, sign in ((z0, -1), (z1, 1)):  # end walls
        b.box((0.0, mid_y, z_face + sign * t / 2), (half_w + t, height / 2 + t, t / 2), wall_mats[0], shadow=False)

    for side in (-1, 1):
        x_face = side * half_w
        z = z0
        while z < z1:
            seg = rng.uniform(3.0, 9.0)
            end = min(z + seg, z1)
            b.box((x_face + side * t / 2, mid_y, (z + end) / 2), (t / 2, height / 2 + t, (end - z) / 2 + t / 2),
                  wall_mats[int(rng.integers(2))], shadow=False)
            if end - z > 2.0 and rng.uniform() < 0.6:  # a door or picture on this segment
                _panel(b, (x_face - side * 0.03, rng.uniform(-0.5, 0.2), (z + end) / 2), 0,
                       rng.uniform(0.6, min(1.6, end - z - 0.4)), rng.uniform(0.8, 1.8))
            z = end
            if z >= z1 - 3.0:
                continue
            if rng.uniform() < 0.35:  # an alcove: gap in the wall with a small room behind
                gap, deep = rng.uniform(1.2, 2.2), rng.uniform(1.5, 3.0)
                alcove = wall_mats[int(rng.integers(2))]
                xb = x_face + side * (deep + t / 2)
                b.box((xb, mid_y, z + gap / 2), (t / 2, height / 2 + t, gap / 2 + t), alcove, shadow=False)
                for zz in (z - t / 2, z + gap + t / 2):
                    b.box((x_face + side * deep / 2, mid_y, zz), (deep / 2 + t / 2, height / 2 + t, t / 2),
                          alcove, shadow=False)
                if rng.uniform() < 0.6:
                    r = rng.uniform(0.2, 0.5)
                    b.sphere((x_face + side * deep / 2, floor_y - r, z + gap / 2), r, b.random_material())
                z += gap
            elif abs(z) > 2.5:  # a pilaster between segments, from the wall's back face to pd inside
                pw, pd = rng.uniform(0.15, 0.3), rng.uniform(0.1, 0.25)
                b.box((x_face - side * (pd - t) / 2, mid_y, z), ((pd + t) / 2, height / 2, pw),
                      b.random_material(hue, (SOLID, STRIPES, NOISE)))

    beam = b.random_material(hue, (SOLID, NOISE))
    z = z0 + rng.uniform(1.0, 4.0)
    while z < z1 - 0.5:  # ceiling beams: strong overhead parallax cues
        depth = rng.uniform(0.15, 0.35)
        b.box((0.0, ceiling_y + depth / 2, z), (half_w, depth / 2, rng.uniform(0.1, 0.25)), beam, shadow=False)
        z += rng.uniform(3.0, 6.0)

    for _ in range(int(rng.integers(3, 8))):  # obstacles along the walls, leaving the middle open
        side = 1 if rng.uniform() < 0.5 else -1
        s = rng.uniform(0.2, 0.45)
        zc = rng.uniform(2.5, z1 - 1.0)
        x = side * (half_w - s - 0.05)
        if not _clear_of_origin(x, zc, s * math.sqrt(2)):
            continue
        if rng.uniform() < 0.5:
            b.box((x, floor_y - s, zc), (s, s, s), b.random_material(), _rot_y(rng.uniform(0, math.pi / 2)))
        else:
            b.sphere((x, floor_y - s, zc), s, b.random_material())
    return _indoor_lighting(rng, b), (-half_w, half_w, z0, z1), floor_y


def _tree(b: WorldBuilder, x: float, z: float, floor_y: float, trunk_mat: int, leaf_hue: float) -> None:
    rng = b.rng
    trunk_h, trunk_r = rng.uniform(2.0, 4.5), rng.uniform(0.1, 0.3)
    b.cylinder((x, floor_y - trunk_h / 2, z), trunk_r, trunk_h / 2, trunk_mat)
    crown = rng.uniform(1.0, 2.2)
    leaves = b.material(b.color(leaf_hue, sat=(0.4, 0.8), val=(0.3, 0.65)), b.color(leaf_hue, val=(0.15, 0.4)),
                        NOISE, float(rng.uniform(0.2, 0.5)))
    b.sphere((x, floor_y - trunk_h - crown * 0.7, z), crown, leaves)


def _street(b: WorldBuilder) -> tuple[Lighting, tuple, float]:
    rng = b.rng
    floor_y = rng.uniform(1.5, 1.8)
    road, walk = rng.uniform(4.0, 7.0), rng.uniform(2.0, 3.5)  # half road width, sidewalk width
    z0, z1 = -15.0, 90.0
    asphalt = b.material(b.color(0.6, sat=(0.0, 0.08), val=(0.22, 0.35)), b.color(0.6, sat=(0.0, 0.1), val=(0.1, 0.2)),
                         NOISE, 0.5, grain=0.15)
    b.plane((0.0, -1.0, 0.0), -floor_y, asphalt)
    # Dashed centre line: a flat box striped along z.
    dash = b.material((0.92, 0.9, 0.8), (0.25, 0.25, 0.27), STRIPES, 1.5, axis=(0.0, 0.0, 1.0))
    b.box((0.0, floor_y - 0.005, (z0 + z1) / 2), (0.08, 0.005, (z1 - z0) / 2), dash, shadow=False)
    pave = b.material(b.color(sat=(0.0, 0.15), val=(0.55, 0.8)), b.color(sat=(0.0, 0.15), val=(0.35, 0.6)),
                      CHECKER, float(rng.uniform(0.3, 0.6)))
    for side in (-1, 1):
        b.box((side * (road + walk / 2), floor_y - 0.075, (z0 + z1) / 2), (walk / 2, 0.075, (z1 - z0) / 2), pave,
              shadow=False)

    cross = rng.uniform(25, 55)  # a side street: a gap in both building rows
    cross_half = road
    for side in (-1, 1):
        front = side * (road + walk)
        z = z0 - 5.0
        while z < z1 + 5.0:
            length = rng.uniform(6.0, 16.0)
            if z < cross + cross_half and z + length > cross - cross_half:  # leave the side street open
                depth = rng.uniform(8, 15)
                b.box((front + side * (25 + depth / 2), floor_y - 10, cross), (depth / 2, 10, cross_half + 4),
                      _wall_material(b, rng.uniform(0, 1)))  # the block seen down the side street
                z = cross + cross_half
                continue
            depth, tall = rng.uniform(8, 15), rng.uniform(5, 25)
            facade = _facade(b)
            b.box((front + side * depth / 2, floor_y - tall / 2, z + length / 2), (depth / 2, tall / 2, length / 2), facade)
            z += length + (rng.uniform(0.5, 4.0) if rng.uniform() < 0.4 else 0.0)

    pole = b.material((0.2, 0.2, 0.22), pattern=SOLID)
    lamp = b.material((1.0, 0.95, 0.75), pattern=SOLID, grain=0.0)
    for side in (-1, 1):
        z = z0 + rng.uniform(0, 8)
        while z < z1:
            x = side * (road + 0.4)
            if _clear_of_origin(x, z, 0.3):
                h = rng.uniform(4.0, 5.5)
                b.cylinder((x, floor_y - h / 2, z), 0.08, h / 2, pole)
                b.sphere((x, floor_y - h - 0.2, z), 0.25, lamp)
            z += rng.uniform(10, 16)
    bark = b.material((0.35, 0.25, 0.15), (0.22, 0.15, 0.08), NOISE, 0.15)
    for _ in range(int(rng.integers(3, 9))):
        side = 1 if rng.uniform() < 0.5 else -1
        x, z = side * (road + walk * rng.uniform(0.5, 0.8)), rng.uniform(z0 + 5, z1 - 5)
        if _clear_of_origin(x, z, 2.2):
            _tree(b, x, z, floor_y, bark, rng.uniform(0.22, 0.38))
    for _ in range(int(rng.integers(3, 9))):  # parked cars: body + cabin
        side = 1 if rng.uniform() < 0.5 else -1
        x, z = side * (road - 1.25), rng.uniform(z0 + 5, z1 - 5)
        if not _clear_of_origin(x, z, 2.3):
            continue
        paint = b.material(b.color(sat=(0.4, 0.9), val=(0.3, 0.95)), pattern=SOLID, grain=0.03)
        glass = b.material((0.15, 0.18, 0.22), pattern=SOLID, grain=0.0)
        b.box((x, floor_y - 0.55, z), (0.9, 0.4, 2.1), paint)
        b.box((x, floor_y - 1.2, z - 0.2), (0.8, 0.3, 1.1), glass)
    bounds = (-road, road, z0 + 3.0, z1 - 3.0)
    return _outdoor_lighting(rng), bounds, floor_y


def _facade(b: WorldBuilder) -> int:
    rng = b.rng
    wall = b.color(sat=(0.1, 0.5), val=(0.45, 0.9))
    roll = rng.uniform()
    if roll < 0.35:  # window grid
        return b.material(wall, b.color(0.6, sat=(0.1, 0.4), val=(0.1, 0.35)), CHECKER, float(rng.uniform(0.8, 1.6)))
    if roll < 0.6:
        return b.material(wall, b.color(sat=(0.0, 0.1), val=(0.7, 0.95)), BRICKS, float(rng.uniform(0.4, 0.7)))
    if roll < 0.8:  # floors as horizontal bands
        return b.material(wall, b.color(0.6, sat=(0.1, 0.4), val=(0.15, 0.4)), STRIPES, float(rng.uniform(0.8, 1.6)))
    return b.material(wall, b.color(sat=(0.1, 0.5), val=(0.3, 0.7)), NOISE, float(rng.uniform(0.5, 2.0)))


def _terrain(b: WorldBuilder) -> tuple[Lighting, tuple, float]:
    rng = b.rng
    floor_y = rng.uniform(1.5, 1.8)
    ground_hue = rng.uniform(0.08, 0.3)  # sand to grass
    ground = b.material(b.color(ground_hue, sat=(0.35, 0.65), val=(0.4, 0.7)),
                        b.color(ground_hue, sat=(0.3, 0.7), val=(0.2, 0.45)), NOISE, float(rng.uniform(0.6, 1.5)),
                        grain=0.15)
    b.plane((0.0, -1.0, 0.0), -floor_y, ground)
    for _ in range(int(rng.integers(4, 9))):  # distant hills: large, mostly buried spheres
        r, dist, angle = rng.uniform(15, 40), rng.uniform(60, 120), rng.uniform(0, 2 * math.pi)
        hill = b.material(b.color(ground_hue + rng.uniform(-0.05, 0.1), sat=(0.3, 0.6), val=(0.3, 0.6)),
                          b.color(ground_hue, val=(0.2, 0.5)), NOISE, float(rng.uniform(3, 8)))
        b.sphere((dist * math.sin(angle), floor_y + r * rng.uniform(0.55, 0.85), dist * math.cos(angle)), r, hill)
    rock_hue = rng.uniform(0, 1)
    bark = b.material((0.35, 0.25, 0.15), (0.2, 0.13, 0.07), NOISE, 0.15)
    leaf_hue = rng.uniform(0.2, 0.4)

    def spot(radius: float) -> tuple[float, float] | None:
        for _ in range(30):
            x, z = rng.uniform(-30, 30), rng.uniform(-30, 30)
            if _clear_of_origin(x, z, radius):
                return x, z
        return None

    for _ in range(int(rng.integers(12, 24))):  # rocks, partly sunk
        r = rng.uniform(0.3, 1.5)
        if (xz := spot(r)) is not None:
            b.sphere((xz[0], floor_y + r * 0.3, xz[1]), r,
                     b.material(b.color(rock_hue, sat=(0.0, 0.2), val=(0.35, 0.7)), pattern=NOISE, scale=0.4))
    for _ in range(int(rng.integers(10, 20))):
        if (xz := spot(2.2)) is not None:
            _tree(b, xz[0], xz[1], floor_y, bark, leaf_hue)
    for _ in range(int(rng.integers(5, 12))):  # standing stones and ruins, some leaning
        hx, hz, hy = rng.uniform(0.2, 1.0), rng.uniform(0.2, 1.0), rng.uniform(0.5, 2.5)
        if (xz := spot(math.hypot(hx, hz) + 0.5)) is not None:
            tilt = _rot_y(rng.uniform(0, math.pi)) @ _rot_x(rng.normal(0, 0.08)) @ _rot_z(rng.normal(0, 0.08))
            b.box((xz[0], floor_y - hy + 0.2, xz[1]), (hx, hy, hz), b.random_material(rock_hue, (SOLID, NOISE, BRICKS)),
                  tilt)
    for _ in range(int(rng.integers(1, 4))):  # fallen logs: horizontal cylinders
        r, half = rng.uniform(0.15, 0.35), rng.uniform(1.0, 2.5)
        if (xz := spot(half + r)) is not None:
            b.cylinder((xz[0], floor_y - r, xz[1]), r, half, bark, _rot_y(rng.uniform(0, math.pi)) @ _rot_z(math.pi / 2))
    return _outdoor_lighting(rng), (-25.0, 25.0, -25.0, 25.0), floor_y


_BUILDERS = {"room": _room, "corridor": _corridor, "street": _street, "terrain": _terrain}


def make_world(seed: int, kind: str | None = None) -> World:
    """Generate a world from ``seed`` (a non-negative int); ``kind`` is one of `KINDS`, or None
    to let the seed choose. Deterministic: the same arguments give the same tensors."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserInputError(f"world seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    if kind is None:
        kind = KINDS[int(np.random.default_rng([seed, 0]).integers(len(KINDS)))]
    if kind not in _BUILDERS:
        raise UserInputError(f"unknown world kind {kind!r}; choose one of {', '.join(KINDS)}")
    builder = WorldBuilder(np.random.default_rng([seed, 1]))
    lighting, bounds, floor_y = _BUILDERS[kind](builder)
    return builder.build(kind, seed, lighting, bounds, floor_y)
