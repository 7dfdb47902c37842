"""Getting an input image and its intrinsics to the model's resolution.

The model runs at a fixed size (H, W). An arbitrary photo is resized (aspect kept) until it
covers that size and then centre-cropped; the intrinsics follow the same two steps. Resizing
in the corner-origin pixel coordinates of `sanawm.camera` is a pure scale, cropping a shift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from os import PathLike
from typing import Any

import numpy as np
import torch
from PIL import Image

from sanawm.camera.convention import as_float64, as_image_size, check_finite
from sanawm.errors import UserInputError

# 60 degrees horizontal: a moderate lens, in the range of the phone/action-camera walk-through
# footage camera-controlled video models are trained on (about 55-75 degrees after cropping to
# 16:9). The model is tolerant to the exact value; an estimate from the image is better.
DEFAULT_FOV_DEG = 60.0


def default_intrinsics(image_size: tuple[int, int], fov_deg: float = DEFAULT_FOV_DEG) -> torch.Tensor:
    """``[fx, fy, cx, cy]`` (float32, pixels) of a pinhole with horizontal field of view ``fov_deg``.

    Square pixels (fy = fx) and a centred principal point ``(W / 2, H / 2)``.
    """
    height, width = as_image_size(image_size)
    if not (isinstance(fov_deg, int | float) and 0 < fov_deg < 180):
        raise UserInputError(f"field of view must be a number of degrees in (0, 180), got {fov_deg!r}")
    focal = (width / 2) / math.tan(math.radians(fov_deg) / 2)
    return torch.tensor([focal, focal, width / 2, height / 2], dtype=torch.float32)


FRAME_ROUNDINGS = ("down", "nearest")


def snap_frame_count(
    num_frames: int, temporal_stride: int = 8, rounding: str = "down", upper_bound: int | None = None
) -> int:
    """A count of the form ``temporal_stride * k + 1`` for ``num_frames`` (>= 1).

    ``rounding="down"`` (default): the largest such count <= ``num_frames``, so a trajectory
    of ``num_frames`` poses always covers it. ``"nearest"``: diffusers' rule (`SanaWMPipeline`):
    the nearer of the two neighbours, the upper one on a tie, but the lower one when the upper
    exceeds ``upper_bound`` (the poses available).
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, int | np.integer) or num_frames < 1:
        raise UserInputError(f"frame count must be a positive integer, got {num_frames!r}")
    if isinstance(temporal_stride, bool) or not isinstance(temporal_stride, int) or temporal_stride < 1:
        raise UserInputError(f"temporal stride must be a positive integer, got {temporal_stride!r}")
    if rounding not in FRAME_ROUNDINGS:
        raise UserInputError(f"unknown frame rounding {rounding!r}; choose one of {', '.join(FRAME_ROUNDINGS)}")
    below = int(num_frames - (num_frames - 1) % temporal_stride)
    if rounding == "down" or below == num_frames:
        return below
    above = below + temporal_stride
    nearest = below if num_frames - below < above - num_frames else above
    return below if upper_bound is not None and nearest > upper_bound else nearest


@dataclass(frozen=True)
class ResizeCrop:
    """How an image of ``src_size`` becomes ``dst_size``: resize to ``resized_size``, then crop.

    All sizes are ``(H, W)``; ``offset`` is the ``(top, left)`` corner of the crop in the resized image.
    """

    src_size: tuple[int, int]
    resized_size: tuple[int, int]
    offset: tuple[int, int]
    dst_size: tuple[int, int]

    def apply(self, intrinsics: Any) -> torch.Tensor:
        """Map ``[fx, fy, cx, cy]`` (``(4,)`` or ``(F, 4)``) from the source image to the output (float32)."""
        k = as_float64(intrinsics, "intrinsics")
        if k.ndim not in (1, 2) or k.shape[-1] != 4:
            raise UserInputError(f"intrinsics must have shape (4,) or (F, 4), got {tuple(k.shape)}")
        check_finite(k, "intrinsics")
        # Rounding makes the two scales differ by a hair; using each keeps the crop exact.
        scale_y = self.resized_size[0] / self.src_size[0]
        scale_x = self.resized_size[1] / self.src_size[1]
        top, left = self.offset
        out = k.clone()
        out[..., 0] = k[..., 0] * scale_x
        out[..., 1] = k[..., 1] * scale_y
        out[..., 2] = k[..., 2] * scale_x - left
        out[..., 3] = k[..., 3] * scale_y - top
        return out.float()


def plan_resize_crop(src_size: tuple[int, int], dst_size: tuple[int, int]) -> ResizeCrop:
    """The smallest aspect-preserving resize of ``src_size`` that covers ``dst_size``, then a centre crop."""
    src_h, src_w = as_image_size(src_size, "source image size")
    dst_h, dst_w = as_image_size(dst_size, "target image size")
    scale = max(dst_h / src_h, dst_w / src_w)
    resized = (max(dst_h, round(src_h * scale)), max(dst_w, round(src_w * scale)))
    offset = ((resized[0] - dst_h) // 2, (resized[1] - dst_w) // 2)
    return ResizeCrop((src_h, src_w), resized, offset, (dst_h, dst_w))


def scale_intrinsics(intrinsics: Any, src_size: tuple[int, int], dst_size: tuple[int, int]) -> torch.Tensor:
    """``[fx, fy, cx, cy]`` of an image of ``src_size`` resized (not cropped) to ``dst_size`` (float64).

    With corner-origin pixels a resize is a plain scale: fx and cx by the width ratio, fy and cy
    by the height ratio. ``intrinsics`` may have any leading shape (..., 4).
    """
    k = as_float64(intrinsics, "intrinsics")
    (src_h, src_w), (dst_h, dst_w) = as_image_size(src_size, "source image size"), as_image_size(dst_size)
    return k * torch.tensor([dst_w / src_w, dst_h / src_h, dst_w / src_w, dst_h / src_h], dtype=torch.float64)


def adjust_intrinsics_for_resize_crop(
    intrinsics: Any, src_size: tuple[int, int], dst_size: tuple[int, int]
) -> torch.Tensor:
    """Intrinsics of an image of ``src_size`` after `prepare_image` brings it to ``dst_size`` (float32)."""
    return plan_resize_crop(src_size, dst_size).apply(intrinsics)


def prepare_image(
    image: Image.Image | np.ndarray | str | PathLike, size: tuple[int, int]
) -> tuple[Image.Image, ResizeCrop]:
    """Resize (to cover) and centre-crop an RGB image to ``size = (H, W)``.

    ``image`` may be a PIL image, an ``(H, W, 3)`` uint8 array or a path. Returns the RGB result
    and the `ResizeCrop` whose ``apply`` maps intrinsics of the original image to the result.
    """
    if isinstance(image, str | PathLike):
        with Image.open(image) as opened:
            image = opened.convert("RGB")
    elif isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise UserInputError(f"image array must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        image = Image.fromarray(image)
    elif isinstance(image, Image.Image):
        image = image.convert("RGB")
    else:
        raise UserInputError(
            f"image must be a PIL image, an (H, W, 3) uint8 array or a path, got {type(image).__name__}"
        )
    plan = plan_resize_crop((image.height, image.width), size)
    (rh, rw), (top, left), (h, w) = plan.resized_size, plan.offset, plan.dst_size
    resized = image.resize((rw, rh), Image.Resampling.LANCZOS)
    return resized.crop((left, top, left + w, top + h)), plan
