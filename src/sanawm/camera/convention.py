"""The camera convention and the checks that every public camera function runs on its inputs.

Convention (the only one used inside sanawm):

* Poses are **camera-to-world** 4x4 matrices ``c2w``: ``x_world = c2w @ [x_cam, 1]``.
* Camera axes follow **OpenCV**: +x right, +y down, +z forward (the viewing direction).
  World up is therefore -y; the action language moves on the world x-z plane.
* Units are **metres** (in practice "scene units": the model only sees relative motion).
* Intrinsics are ``[fx, fy, cx, cy]`` in **pixels of a stated image size (H, W)**, in continuous
  image coordinates whose origin is the top-left *corner* of the image: pixel (row i, column j)
  covers ``[j, j+1) x [i, i+1)`` and its centre is ``(j + 0.5, i + 0.5)``. A centred principal
  point is ``(W / 2, H / 2)``. This is the coordinate frame in which resizing is a pure scale.

Arrays come in as numpy arrays, torch tensors or nested lists; sanawm returns torch float32 CPU
tensors. Checks are done in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sanawm.errors import UserInputError

# Tolerances for "this is a rigid motion". Generous enough for poses stored as float32 or as
# text with 6 decimals (RealEstate10K), tight enough to catch scaled or sheared matrices.
ORTHONORMAL_ATOL = 1e-4
BOTTOM_ROW_ATOL = 1e-6

# c2w_cv = c2w_gl @ OPENGL_TO_OPENCV: OpenGL cameras look down -z with +y up, so the y and z
# camera axes flip. The matrix is its own inverse.
OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


def as_float64(value: Any, name: str) -> torch.Tensor:
    """``value`` (array, tensor, nested list) as a CPU float64 tensor; non-numeric input is a user error."""
    try:
        if isinstance(value, torch.Tensor):
            return value.detach().to(device="cpu", dtype=torch.float64)
        return torch.as_tensor(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise UserInputError(f"{name} must be an array of numbers ({err})") from None


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise if ``x`` holds NaN or inf, naming the first bad entry."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        raise UserInputError(f"{name} contains NaN or inf (first at index {index})")


def as_c2w(value: Any, name: str = "c2w", *, batched: bool = False) -> torch.Tensor:
    """Validate camera-to-world poses and return them as float64 ``(F, 4, 4)`` (``(B, F, 4, 4)`` if batched).

    Checks: shape, finiteness, bottom row ``[0, 0, 0, 1]``, rotation block orthonormal with
    determinant +1 (a proper rotation, no scale, shear or reflection).
    """
    c2w = as_float64(value, name)
    want = "(B, F, 4, 4)" if batched else "(F, 4, 4)"
    if c2w.ndim != (4 if batched else 3) or tuple(c2w.shape[-2:]) != (4, 4) or c2w.shape[-3] == 0:
        raise UserInputError(f"{name} must have shape {want}, got {tuple(c2w.shape)}")
    check_finite(c2w, name)
    flat = c2w.reshape(-1, 4, 4)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    bottom_err = (flat[:, 3] - bottom).abs().amax(dim=-1)
    if bool((bottom_err > BOTTOM_ROW_ATOL).any()):
        i = int(torch.argmax(bottom_err))
        raise UserInputError(
            f"{name}: frame {_frame_label(i, c2w)} has bottom row {flat[i, 3].tolist()}, expected [0, 0, 0, 1]"
        )
    rot = flat[:, :3, :3]
    ortho_err = (rot.transpose(-1, -2) @ rot - torch.eye(3, dtype=torch.float64)).abs().amax(dim=(-2, -1))
    if bool((ortho_err > ORTHONORMAL_ATOL).any()):
        i = int(torch.argmax(ortho_err))
        raise UserInputError(
            f"{name}: frame {_frame_label(i, c2w)} rotation is not orthonormal "
            f"(max |R^T R - I| = {float(ortho_err[i]):.3g}); poses must be rigid, without scale or shear"
        )
    det = torch.linalg.det(rot)
    if bool((det < 0).any()):
        i = int(torch.nonzero(det < 0)[0])
        raise UserInputError(
            f"{name}: frame {_frame_label(i, c2w)} rotation has determinant {float(det[i]):.3g} "
            "(a reflection); mixed-up axis conventions? (OpenGL poses: use the opengl option)"
        )
    return c2w


def _frame_label(flat_index: int, c2w: torch.Tensor) -> str:
    if c2w.ndim == 3:
        return str(flat_index)
    frames = c2w.shape[-3]
    return f"{flat_index % frames} of batch item {flat_index // frames}"


def as_intrinsics(value: Any, num_frames: int, name: str = "intrinsics") -> torch.Tensor:
    """Validate ``[fx, fy, cx, cy]`` (one ``(4,)`` for all frames or per-frame ``(F, 4)``) -> float64 ``(F, 4)``."""
    k = as_float64(value, name)
    if k.shape == (4,):
        k = k.expand(num_frames, 4)
    elif k.shape != (num_frames, 4):
        raise UserInputError(
            f"{name} must be [fx, fy, cx, cy] of shape (4,) or ({num_frames}, 4) (one per frame), got {tuple(k.shape)}"
        )
    check_finite(k, name)
    if bool((k[:, :2] <= 0).any()):
        raise UserInputError(f"{name}: focal lengths fx, fy must be positive, got {k[:, :2].min().item():g}")
    return k.clone()


def as_image_size(value: Any, name: str = "image_size") -> tuple[int, int]:
    """Validate an image size ``(H, W)`` of two positive integers."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence | np.ndarray | torch.Tensor):
        raise UserInputError(f"{name} must be (H, W), got {value!r}")
    items = list(value.tolist() if isinstance(value, np.ndarray | torch.Tensor) else value)
    if len(items) != 2:
        raise UserInputError(f"{name} must be (H, W), got {value!r}")
    out = []
    for item in items:
        if isinstance(item, bool) or not float(item).is_integer() or int(item) <= 0:
            raise UserInputError(f"{name} must be two positive integers (H, W), got {value!r}")
        out.append(int(item))
    return out[0], out[1]


def pose_inverse(c2w: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid 4x4 poses (any leading dims) using ``R^T`` instead of a general inverse."""
    rot_t = c2w[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(c2w)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ c2w[..., :3, 3:]).squeeze(-1)
    out[..., 3, 3] = 1.0
    return out


def opengl_to_opencv(c2w: torch.Tensor) -> torch.Tensor:
    """Convert OpenGL-convention c2w (camera +y up, looking down -z) to ours by flipping camera y and z."""
    return c2w @ OPENGL_TO_OPENCV.to(c2w.dtype)
