"""Figure for an evaluation report (matplotlib on an Agg canvas: no display, no pyplot state).

Four panels drawn from the report dict alone, so a saved JSON can be plotted again:
top-down paths (commanded vs estimated), per-frame camera errors, image quality over time
with the first and last degradation windows shaded, and the revisit pairs (or, when the
trajectory never returns, the summary table).
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np


def plot_report(report: dict, path: str | PathLike) -> Path:
    """Save the report figure as a PNG at `path` and return the path."""
    # imported here: matplotlib costs about a second and only plotting needs it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from sanawm.evaluation.report import format_table

    figure = Figure(figsize=(12, 9), dpi=100)
    FigureCanvasAgg(figure)
    (paths, errors), (quality, last) = figure.subplots(2, 2)
    camera = report["camera"]

    commanded = np.asarray(camera["commanded_xyz"])
    estimated = np.asarray(camera["estimated_xyz"])
    for xyz, name, color in ((commanded, "commanded", "C0"), (estimated, "estimated (aligned)", "C1")):
        paths.plot(xyz[:, 0], xyz[:, 2], color=color, lw=1.5, label=name)
        paths.plot(xyz[0, 0], xyz[0, 2], "o", color=color, ms=6)
        paths.plot(xyz[-1, 0], xyz[-1, 2], "s", color=color, ms=5)
    paths.set_aspect("equal", adjustable="datalim")
    paths.set_xlabel("x (right)")
    paths.set_ylabel("z (forward)")
    paths.set_title("camera paths, top view (o start, \u25a1 end)")
    paths.grid(True, alpha=0.3)
    paths.legend(loc="best")

    frames = np.asarray(camera["frames"])
    errors.plot(frames, camera["rot_err_deg"], color="C3", label="RotErr (deg)")
    errors.set_xlabel("frame")
    errors.set_ylabel("RotErr (deg)", color="C3")
    twin = errors.twinx()
    twin.plot(frames, camera["trans_err_rel"], color="C2", label="TransErr")
    twin.set_ylabel("TransErr (commanded units)", color="C2")
    errors.set_title(
        f"camera errors: RotErr {report['rot_err_deg']:.2f} deg, TransErr {report['trans_err_rel']:.3f}, "
        f"CamMC {report['cammc_rel']:.3f}"
    )
    errors.grid(True, alpha=0.3)

    per_frame = np.arange(report["num_frames"])
    quality.plot(per_frame, report["sharpness"]["per_frame"], color="C4", lw=1)
    quality.set_ylabel("sharpness (Laplacian variance)", color="C4")
    quality.set_xlabel("frame")
    window = report["temporal"]["window_frames"]
    quality.axvspan(0, window - 1, color="0.85", zorder=0)
    quality.axvspan(report["num_frames"] - window, report["num_frames"] - 1, color="0.85", zorder=0)
    title = "image quality over time (shaded: first / last window)"
    if "reference" in report:
        twin = quality.twinx()
        twin.plot(per_frame, report["reference"]["per_frame"]["psnr"], color="C0", lw=1)
        twin.set_ylabel("PSNR vs reference (dB)", color="C0")
    quality.set_title(title)
    quality.grid(True, alpha=0.3)

    if "revisit" in report:
        pairs = report["revisit"]["pairs"]
        xs = [p["frame_b"] for p in pairs]
        last.plot(xs, [p["psnr"] for p in pairs], "o", color="C1", label="video")
        if "reference_psnr" in pairs[0]:
            last.plot(xs, [p["reference_psnr"] for p in pairs], "x", color="C0", label="reference")
        last.set_xlabel("frame of the return")
        last.set_ylabel("PSNR to the earlier view (dB)")
        last.set_title(f"revisits: {len(pairs)} pairs, mean PSNR {report['revisit']['psnr']:.2f} dB")
        last.grid(True, alpha=0.3)
        last.legend(loc="best")
    else:
        last.axis("off")
        last.text(0.0, 1.0, format_table(report), family="monospace", fontsize=9, va="top", transform=last.transAxes)
        last.set_title("summary (no revisits in this trajectory)")

    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png")
    return path
