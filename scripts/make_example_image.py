"""Render the bundled example image (`src/sanawm/assets/example.png`) from a procedural world.

`sanawm generate` starts from this image when no --image is given. Re-run to regenerate:
    python scripts/make_example_image.py
"""

from pathlib import Path

from PIL import Image

from sanawm.camera import default_intrinsics
from sanawm.worlds import make_world, render
from sanawm.worlds.trajectories import random_action_walk

WORLD_SEED = 4  # a street: buildings on both sides, parked cars, a long view down the road
SIZE = (256, 256)
OUT = Path(__file__).resolve().parents[1] / "src" / "sanawm" / "assets" / "example.png"


def main() -> None:
    world = make_world(WORLD_SEED)
    _, c2w = random_action_walk(world, num_frames=17, seed=0)  # its first pose is a free-space start
    image = render(world, c2w[:1], default_intrinsics(SIZE), SIZE, supersample=2)[0]
    Image.fromarray(image.numpy()).save(OUT, optimize=True)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
