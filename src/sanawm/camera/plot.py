"""Top-down pictures of trajectories (matplotlib, Agg canvas: no display and no pyplot state).

The view looks down from above (from -y, world up): x to the right, z up the page. A camera
yawing right ("l") therefore turns clockwise in the picture.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from sanawm.camera.trajectory import Trajectory

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_FRUSTA_PER_PATH = 12


def draw_trajectory(ax: Axes, trajectory: Trajectory, *, color: str = "C0", label: str | None = None) -> None:
    """Draw the x-z path of camera centres and about a dozen horizontal view wedges on ``ax``."""
    c2w = trajectory.c2w.double()
    centres = c2w[:, :3, 3]
    ax.plot(centres[:, 0], centres[:, 2], color=color, lw=1.5, label=label)
    ax.plot(centres[0, 0], centres[0, 2], "o", color=color, ms=6)
    ax.plot(centres[-1, 0], centres[-1, 2], "s", color=color, ms=5)

    extent = float((centres.amax(0) - centres.amin(0))[[0, 2]].max())
    depth = 0.08 * extent if extent > 0 else 0.2
    _, width = trajectory.image_size
    step = max(1, trajectory.num_frames // _FRUSTA_PER_PATH)
    for i in range(0, trajectory.num_frames, step):
        fx, _, cx, _ = trajectory.intrinsics[i].double().tolist()
        # Rays through the left and right image edges at the principal point's height.
        edges_cam = torch.tensor([[-cx / fx, 0.0, 1.0], [(width - cx) / fx, 0.0, 1.0]], dtype=torch.float64) * depth
        edges = edges_cam @ c2w[i, :3, :3].T + centres[i]
        xs = [edges[0, 0], centres[i, 0], edges[1, 0]]
        zs = [edges[0, 2], centres[i, 2], edges[1, 2]]
        ax.plot(xs, zs, color=color, lw=0.8, alpha=0.7)
        ax.plot(edges[:, 0], edges[:, 2], color=color, lw=0.8, alpha=0.7)


def plot_trajectory(trajectory: Trajectory, path: str | PathLike, *, title: str | None = None) -> Path:
    """Save a top-down PNG of ``trajectory`` (path, start circle, end square, view wedges) to ``path``."""
    # Imported here: matplotlib costs about a second, and most users of sanawm.camera never plot.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 6), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    draw_trajectory(ax, trajectory)
    ax.set_xlabel("x (right) [m]")
    ax.set_ylabel("z (forward) [m]")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"camera path, {trajectory.num_frames} frames (top view)")
    path = Path(path)
    figure.savefig(path, format="png")
    return path
