"""Procedural 3D worlds with exact cameras: ground truth for training and evaluating the world model.

* `make_world(seed, kind)`: a room, corridor, street or open terrain built from analytic
  primitives with procedural textures and simple lighting (`World`).
* `render` / `trace`: batched ray tracing of F camera poses (OpenCV convention, see
  `sanawm.camera`) on CPU or CUDA.
* `sanawm.worlds.trajectories`: seeded camera paths that stay in free space.
"""

from sanawm.worlds.generate import KINDS, WorldBuilder, make_world
from sanawm.worlds.render import RenderResult, camera_rays, render, trace
from sanawm.worlds.scene import Lighting, World

__all__ = [
    "KINDS",
    "Lighting",
    "RenderResult",
    "World",
    "WorldBuilder",
    "camera_rays",
    "make_world",
    "render",
    "trace",
]
