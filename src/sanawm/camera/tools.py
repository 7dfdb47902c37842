"""Editing trajectories: change the frame count or image size, chain two paths, return to the start."""

from __future__ import annotations

import torch

from sanawm.camera.convention import pose_inverse
from sanawm.camera.image import scale_intrinsics
from sanawm.camera.rotations import interpolate_poses
from sanawm.camera.trajectory import Trajectory
from sanawm.errors import UserInputError


def resample_trajectory(trajectory: Trajectory, num_frames: int) -> Trajectory:
    """The same path with ``num_frames`` evenly spaced poses.

    New frame j sits at time ``j * (F - 1) / (num_frames - 1)`` of the old frames; rotations are
    SLERPed and positions and intrinsics linearly interpolated between the two neighbours.
    The first and last poses are kept; the same count returns the same poses and
    ``num_frames = 1`` keeps only the first.
    """
    _check_count(num_frames, "num_frames", minimum=1)
    c2w, k = trajectory.c2w.double(), trajectory.intrinsics.double()
    old = trajectory.num_frames
    if num_frames == old:
        return Trajectory(c2w, k, trajectory.image_size)
    if old == 1 or num_frames == 1:
        index = torch.zeros(num_frames, dtype=torch.long)
        return Trajectory(c2w[index], k[index], trajectory.image_size)
    time = torch.arange(num_frames, dtype=torch.float64) * ((old - 1) / (num_frames - 1))
    time[-1] = old - 1  # exactly the last pose, whatever the rounding
    left = time.floor().long().clamp_max(old - 2)
    frac = time - left
    new_c2w = interpolate_poses(c2w[left], c2w[left + 1], frac)
    new_k = torch.lerp(k[left], k[left + 1], frac[:, None])
    return Trajectory(new_c2w, new_k, trajectory.image_size)


def rescale_trajectory(trajectory: Trajectory, image_size: tuple[int, int]) -> Trajectory:
    """The same cameras for the video resized (not cropped) to ``image_size`` (H, W).

    Poses are unchanged; intrinsics follow `scale_intrinsics`. The same size returns the
    trajectory itself.
    """
    if trajectory.image_size == tuple(image_size):
        return trajectory
    k = scale_intrinsics(trajectory.intrinsics, trajectory.image_size, image_size)
    return Trajectory(trajectory.c2w, k, image_size)


def concat_trajectories(first: Trajectory, second: Trajectory) -> Trajectory:
    """``first`` followed by ``second`` moved rigidly so that it starts where ``first`` ends.

    ``second``'s frame 0 is identified with ``first``'s last frame (so it is dropped), and its
    later frames keep their motion relative to its frame 0: ``first[-1] @ inv(second[0]) @ second[i]``.
    The result has ``len(first) + len(second) - 1`` frames. Image sizes must match.
    """
    if first.image_size != second.image_size:
        raise UserInputError(
            f"cannot concatenate trajectories for image sizes {first.image_size} and {second.image_size}; "
            "adjust the intrinsics of one first (adjust_intrinsics_for_resize_crop)"
        )
    anchor = first.c2w[-1:].double() @ pose_inverse(second.c2w[:1].double())
    moved = anchor @ second.c2w[1:].double()
    return Trajectory(
        torch.cat([first.c2w.double(), moved]),
        torch.cat([first.intrinsics, second.intrinsics[1:]]),
        first.image_size,
    )


def loop_back(trajectory: Trajectory, num_return_frames: int) -> Trajectory:
    """Append ``num_return_frames`` poses that lead from the last pose back to the first.

    The return leg is a straight line in position with SLERPed orientation (intrinsics blend
    back too), at constant speed; its last pose equals frame 0 exactly, so a video of the result
    revisits its opening view.
    """
    _check_count(num_return_frames, "num_return_frames", minimum=1)
    c2w, k = trajectory.c2w.double(), trajectory.intrinsics.double()
    frac = torch.arange(1, num_return_frames + 1, dtype=torch.float64) / num_return_frames
    leg = interpolate_poses(c2w[-1:].expand(num_return_frames, 4, 4), c2w[:1].expand(num_return_frames, 4, 4), frac)
    leg[-1] = c2w[0]
    leg_k = torch.lerp(k[-1:], k[:1], frac[:, None])
    return Trajectory(torch.cat([c2w, leg]), torch.cat([k, leg_k]), trajectory.image_size)


def _check_count(value: int, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
