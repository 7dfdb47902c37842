"""World consistency over time: revisit pairs and first-vs-last-window degradation.

* Revisits: when the commanded camera comes back to where it was seconds earlier, a
  consistent world model shows the same view again. `find_revisit_pairs` picks such frame
  pairs from the commanded trajectory; `revisit_scores` compares the generated frames with
  PSNR / SSIM (SANA-WM's benchmark does the same on its own list of revisit pairs).
* Degradation: `window_trend` compares the mean of a per-frame quality series over the first
  and the last window of the clip (SANA-WM uses 10 s windows; first minus last, so a positive
  value means the quality dropped).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sanawm.errors import UserInputError
from sanawm.evaluation.geometry import as_trajectory, rotation_angle_deg
from sanawm.evaluation.image_metrics import psnr, ssim


@dataclass(frozen=True)
class RevisitConfig:
    """What counts as a revisit.

    max_distance: camera centres at most this far apart (trajectory units, metres).
    max_angle_deg: orientations at most this far apart.
    min_gap_sec: the two frames at least this far apart in time, so the model had to
        remember the view rather than just keep it on screen.
    max_pairs: most pairs kept (the best matching, spread over the clip).
    """

    max_distance: float = 0.15
    max_angle_deg: float = 10.0
    min_gap_sec: float = 2.0
    max_pairs: int = 16

    def __post_init__(self) -> None:
        if not self.max_distance > 0 or not self.max_angle_deg > 0:
            raise UserInputError("revisit thresholds max_distance and max_angle_deg must be positive")
        if self.min_gap_sec < 0:
            raise UserInputError(f"revisit min_gap_sec must not be negative, got {self.min_gap_sec}")
        if self.max_pairs < 1:
            raise UserInputError(f"revisit max_pairs must be at least 1, got {self.max_pairs}")


@dataclass(frozen=True)
class RevisitPair:
    """Two frames whose commanded cameras nearly coincide."""

    frame_a: int  # the earlier frame
    frame_b: int
    distance: float  # between the camera centres
    angle_deg: float  # between the orientations


def find_revisit_pairs(c2w, fps: float, config: RevisitConfig | None = None) -> list[RevisitPair]:
    """Revisit pairs of a (F, 4, 4) commanded trajectory sampled at `fps`, sorted by frame_b.

    Candidates satisfy all thresholds of `config`; they are taken best first (smallest
    distance/max_distance + angle/max_angle_deg), skipping any candidate whose two frames
    both lie within half the minimum gap of an already chosen pair's frames, so the pairs
    describe different returns rather than neighbouring frames of one.
    """
    config = config or RevisitConfig()
    poses = as_trajectory(c2w, "commanded trajectory")
    if not fps > 0:
        raise UserInputError(f"fps must be positive, got {fps}")
    gap = max(1, int(round(config.min_gap_sec * fps)))
    centres = poses[:, :3, 3]
    rotations = poses[:, :3, :3]
    a, b = np.triu_indices(len(poses), k=gap)
    if len(a) == 0:
        return []
    distance = np.linalg.norm(centres[a] - centres[b], axis=1)
    close = distance <= config.max_distance
    a, b, distance = a[close], b[close], distance[close]
    angle = rotation_angle_deg(rotations[a], rotations[b])
    aligned = angle <= config.max_angle_deg
    a, b, distance, angle = a[aligned], b[aligned], distance[aligned], angle[aligned]
    score = distance / config.max_distance + angle / config.max_angle_deg

    chosen: list[RevisitPair] = []
    radius = max(1, gap // 2)
    for n in np.argsort(score, kind="stable"):
        if len(chosen) == config.max_pairs:
            break
        if any(abs(a[n] - p.frame_a) < radius and abs(b[n] - p.frame_b) < radius for p in chosen):
            continue
        chosen.append(RevisitPair(int(a[n]), int(b[n]), float(distance[n]), float(angle[n])))
    return sorted(chosen, key=lambda p: (p.frame_b, p.frame_a))


def revisit_scores(frames, pairs: list[RevisitPair]) -> list[dict]:
    """PSNR (dB) and SSIM between the two frames of each pair; one dict per pair."""
    if not pairs:
        return []
    frames = np.asarray(frames)
    last = max(max(p.frame_a, p.frame_b) for p in pairs)
    if frames.ndim != 4 or last >= len(frames):
        raise UserInputError(f"revisit pairs reach frame {last} but the video has {len(frames)} frames")
    first = frames[[p.frame_a for p in pairs]]
    second = frames[[p.frame_b for p in pairs]]
    p_values, s_values = psnr(first, second), ssim(first, second)
    return [
        {
            "frame_a": p.frame_a,
            "frame_b": p.frame_b,
            "distance": p.distance,
            "angle_deg": p.angle_deg,
            "psnr": float(pv),
            "ssim": float(sv),
        }
        for p, pv, sv in zip(pairs, p_values, s_values)
    ]


def window_frames(num_frames: int, fps: float, window_sec: float) -> int:
    """Frames per degradation window: `window_sec` of video, at most half the clip."""
    if not fps > 0 or not window_sec > 0:
        raise UserInputError(f"fps and window length must be positive, got fps={fps}, window={window_sec} s")
    if num_frames < 2:
        raise UserInputError(f"need at least 2 frames to compare a first and a last window, got {num_frames}")
    return max(1, min(int(round(window_sec * fps)), num_frames // 2))


def window_trend(values, window: int) -> dict[str, float]:
    """Mean of `values` (F,) over the first and last `window` entries, and first - last."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or not 1 <= window <= len(values):
        raise UserInputError(f"window of {window} does not fit a series of {values.shape} values")
    first, last = float(values[:window].mean()), float(values[-window:].mean())
    return {"first_window": first, "last_window": last, "degradation": first - last}
