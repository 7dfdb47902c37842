"""Cameras for sanawm: the convention, the action language, model inputs, trajectory files and tools.

Convention (used everywhere in sanawm):

* Poses are **camera-to-world** 4x4 matrices (``x_world = c2w @ [x_cam, 1]``), OpenCV camera
  axes: +x right, +y down, +z forward. World up is -y; the action language walks on the world
  x-z plane and yaws about world y. Units are metres.
* Intrinsics are ``[fx, fy, cx, cy]`` in pixels of a stated image size ``(H, W)``, with the
  origin at the image's top-left *corner*: the centre of pixel (row i, column j) is at
  ``(j + 0.5, i + 0.5)`` and a centred principal point is ``(W / 2, H / 2)``.
* Functions accept numpy arrays, torch tensors or lists and return float32 CPU torch tensors;
  move them to a device yourself.
"""

from sanawm.camera.actions import KEY_LAYOUTS, ActionSegment, action_to_c2w, parse_action
from sanawm.camera.convention import opengl_to_opencv, pose_inverse
from sanawm.camera.image import (
    DEFAULT_FOV_DEG,
    FRAME_ROUNDINGS,
    ResizeCrop,
    adjust_intrinsics_for_resize_crop,
    default_intrinsics,
    plan_resize_crop,
    prepare_image,
    scale_intrinsics,
    snap_frame_count,
)
from sanawm.camera.io import camera_path_for, load_trajectory, load_trajectory_at, save_camera_npz, save_trajectory
from sanawm.camera.packing import pack_camera, plucker_rays
from sanawm.camera.plot import draw_trajectory, plot_trajectory
from sanawm.camera.tools import concat_trajectories, loop_back, resample_trajectory, rescale_trajectory
from sanawm.camera.trajectory import Trajectory

__all__ = [
    "DEFAULT_FOV_DEG",
    "ActionSegment",
    "ResizeCrop",
    "Trajectory",
    "action_to_c2w",
    "KEY_LAYOUTS",
    "adjust_intrinsics_for_resize_crop",
    "camera_path_for",
    "concat_trajectories",
    "default_intrinsics",
    "draw_trajectory",
    "load_trajectory",
    "load_trajectory_at",
    "loop_back",
    "opengl_to_opencv",
    "pack_camera",
    "parse_action",
    "plan_resize_crop",
    "plot_trajectory",
    "plucker_rays",
    "pose_inverse",
    "prepare_image",
    "resample_trajectory",
    "rescale_trajectory",
    "save_camera_npz",
    "save_trajectory",
    "scale_intrinsics",
    "snap_frame_count",
    "FRAME_ROUNDINGS",
]
