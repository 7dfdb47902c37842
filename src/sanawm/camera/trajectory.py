"""`Trajectory`: camera poses plus the intrinsics and image size they refer to."""

from __future__ import annotations

from dataclasses import dataclass
import torch

from sanawm.camera.convention import as_c2w, as_image_size, as_intrinsics


@dataclass
class Trajectory:
    """A camera path in the sanawm convention (see `sanawm.camera`).

    Attributes:
        c2w: ``(F, 4, 4)`` float32 camera-to-world poses (OpenCV axes, metres).
        intrinsics: ``(F, 4)`` float32 ``[fx, fy, cx, cy]`` per frame, in pixels of ``image_size``.
        image_size: ``(H, W)`` in pixels.

    The constructor accepts arrays, tensors or lists, a single ``(4,)`` intrinsics row for all
    frames, and validates everything (rigid poses, finite values, positive focal lengths).
    """

    c2w: torch.Tensor
    intrinsics: torch.Tensor
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        c2w = as_c2w(self.c2w, "trajectory c2w")
        self.intrinsics = as_intrinsics(self.intrinsics, c2w.shape[0], "trajectory intrinsics").float()
        self.c2w = c2w.float()
        self.image_size = as_image_size(self.image_size, "trajectory image_size")

    @property
    def num_frames(self) -> int:
        """Number of poses F."""
        return int(self.c2w.shape[0])

    def __len__(self) -> int:
        return self.num_frames
