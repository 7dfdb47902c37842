"""Does the embedded default model follow the camera? Held-out procedural worlds vs ground truth.

For a fixed list of 32 clips (a held-out world + a 32-move camera path, 33 frames), this script
renders the ground truth, generates the clip with the model from the ground truth's frame 0
(bidirectional, seeded, the model's default steps) and scores three videos against it:

* "model": the model as users run it;
* "repeat_first_frame": ground-truth frame 0 repeated (a video that never moves);
* "no_camera": the same model, same seed, without camera conditioning (the DiT called with
  raymap=None, chunk_plucker=None, the mode it was trained on with camera dropout). The
  pipeline's camera guidance gives exactly that at camera_cfg=0:
  v_full + (0 - 1) * (v_full - v_no_camera) = v_no_camera.

Scores: PSNR / SSIM against the ground truth per second of video (frames 1..fps, fps+1..2 fps,
...; frame 0 is the input), and camera following: poses are estimated from each video with
`sanawm.evaluation` (OpenCV backend, the known intrinsics), aligned to the commanded path and
scored with RotErr / TransErr / CamMC (SANA-WM's per-clip means). A video on which pose
estimation fails is scored as a static camera (identity poses), and counted as a failure.
The same is done on the ground-truth renders ("ground_truth"): the error the pose estimator
itself makes, i.e. the floor for the camera scores.

"Visible" motion: per clip, the commanded and estimated yaw and pitch (degrees, in the first
camera's frame, yaw > 0 = right, pitch > 0 = up) at the frame where the commanded one peaks,
and the angle between the commanded and estimated directions of travel; and, independent of
pose estimation, the PSNR around the frame where the commanded path has turned furthest (the
last frame of a straight path); summarised per motion type (forward, yaw left/right, pitch
up/down, mixed, random walk).

Outputs under --out: report.json, report.md and strip_<clip>.png (rows: ground truth, model,
model without camera; columns: frames 0, F/4, F/2, 3F/4, F-1). Nothing else is written.

    python scripts/eval_embedded.py --out results/eval             # all 32 clips
    python scripts/eval_embedded.py --out /tmp/eval --limit 2      # a quick check on a CPU
    python scripts/eval_embedded.py --out results/eval --rescore results/eval/report.json
                                        # summaries recomputed from an earlier report, no generation
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from sanawm.camera import Trajectory, action_to_c2w, default_intrinsics, parse_action
from sanawm.errors import UserInputError
from sanawm.evaluation import (
    PoseEstimationConfig,
    PoseEstimationError,
    camera_errors,
    estimate_poses_with_backend,
    psnr,
    ssim,
)
from sanawm.jsonfile import read_json_object
from sanawm.pipeline import WorldModel
from sanawm.train.data import HELD_OUT_SEED_BASE
from sanawm.video import frame_strip
from sanawm.worlds import KINDS, World, make_world, render
from sanawm.worlds.trajectories import DEFAULT_MARGIN, random_action_walk, trajectory_clearance

METHODS = ("model", "repeat_first_frame", "no_camera")
MOTIONS = ("forward", "yaw left", "yaw right", "pitch up", "pitch down", "mixed", "walk")  # see motion_type
REFERENCE = "ground_truth"  # poses estimated from the renders themselves: what the estimator can do
CLIP_FRAMES = 33
WORLD_SEEDS_PER_CLIP = 1000  # clip i draws its world from seeds BASE + 1000 i + (0, 1, 2, ...)
WORLD_TRIES = 50  # worlds tried until a hand-written path stays in free space
SIGN_THRESHOLD_DEG = 5.0  # commanded turns smaller than this are not checked for their direction
MIN_VISIBLE_DEG = 2.0  # an estimated turn counts as going the commanded way only from this size on
MIN_TRAVEL = 0.2  # metres; shorter commanded travel has no meaningful direction
PEAK_WINDOW = 4  # frames on each side of the motion's peak frame that `peak_psnr` averages
STRIP_FRAMES = 5
MAX_STRIP_BYTES = 300_000


# ---------------------------------------------------------------------------------------------
# The clips
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipSpec:
    """One evaluation clip before its world is chosen.

    name: short unique label; kind: world kind (`sanawm.worlds.KINDS`); action: a hand-written
    action string, or None for a seeded random walk (`walk_seed`) of `frames` frames;
    world_offset: world seeds are searched from HELD_OUT_SEED_BASE + world_offset upwards
    until the path stays `DEFAULT_MARGIN` away from every surface. index: the clip's place in
    the plan; its generation seed is the run's seed + index, so a clip run alone (--clips) is
    generated as in the full run.
    """

    name: str
    kind: str
    action: str | None = None
    walk_seed: int = 0
    frames: int = CLIP_FRAMES
    world_offset: int = 0
    index: int = 0


# Hand-written paths (kind, action) and random walks (kind, None), interleaved so that the first
# few clips (--limit) already cover forward, yaw, pitch and a walk.
_PLAN = (
    ("room", "w-32"), ("corridor", "l-32"), ("street", "i-16,k-16"), ("terrain", None),
    ("terrain", "j-32"), ("room", "k-16,i-16"), ("corridor", "wl-32"), ("street", None),
    ("street", "w-32"), ("terrain", "i-16,k-16"), ("room", "j-32"), ("corridor", None),
    ("corridor", "k-16,i-16"), ("street", "l-32"), ("terrain", "wj-32"), ("room", None),
    ("terrain", "w-32"), ("room", "w-16,l-16"), ("street", "j-16,wi-8,wk-8"), ("room", None),
    ("corridor", "w-32"), ("corridor", None), ("street", None), ("terrain", None),
    ("room", None), ("corridor", None), ("street", None), ("terrain", None),
    ("room", None), ("corridor", None), ("street", None), ("terrain", None),
)  # fmt: skip


def default_clips() -> list[ClipSpec]:
    """The 32 evaluation clips: 16 hand-written paths (4 forward, 4 yaw, 4 pitch, 4 mixed) and
    16 random action walks, 8 clips per world kind, every clip in its own held-out world."""
    clips = []
    for i, (kind, action) in enumerate(_PLAN):
        label = action.replace(",", "_") if action else f"walk{i}"
        offset = WORLD_SEEDS_PER_CLIP * i
        clips.append(ClipSpec(f"{i:02d}_{kind}_{label}", kind, action, walk_seed=i, world_offset=offset, index=i))
    return clips


@dataclass
class Clip:
    """A resolved clip: its world, action string and commanded poses (frames, 4, 4)."""

    spec: ClipSpec
    world_seed: int
    world: World
    action: str
    c2w: torch.Tensor
    motion: str


def motion_type(action: str, random_walk: bool) -> str:
    """Label of a path for the visibility summary: 'forward', 'yaw right' / 'yaw left',
    'pitch up' / 'pitch down' (by the first pitch key), 'mixed', or 'walk' (random walks)."""
    if random_walk:
        return "walk"
    segments = parse_action(action)
    keys = set().union(*(s.keys for s in segments))
    if keys == {"w"}:
        return "forward"
    if keys in ({"l"}, {"j"}):
        return "yaw right" if keys == {"l"} else "yaw left"
    if keys and keys <= {"i", "k"}:
        first = next(s.keys for s in segments if s.keys)
        return "pitch up" if "i" in first else "pitch down"
    return "mixed"


def resolve_clip(spec: ClipSpec, translation_speed: float, rotation_speed_deg: float) -> Clip:
    """Pick the clip's world (the first seed from its offset where the path is free) and roll
    out its path with the model's action speeds."""
    if spec.kind not in KINDS:
        raise UserInputError(f"clip {spec.name}: unknown world kind {spec.kind!r}; choose from {list(KINDS)}")
    base = HELD_OUT_SEED_BASE + spec.world_offset
    if spec.action is None:
        world = make_world(base, spec.kind)
        action, c2w = random_action_walk(
            world, spec.frames, spec.walk_seed,
            translation_speed=translation_speed, rotation_speed_deg=rotation_speed_deg,
        )  # fmt: skip
        return Clip(spec, base, world, action, c2w, motion_type(action, random_walk=True))
    c2w = action_to_c2w(spec.action, translation_speed=translation_speed, rotation_speed_deg=rotation_speed_deg)
    if len(c2w) != spec.frames:
        raise UserInputError(f"clip {spec.name}: the action {spec.action!r} makes {len(c2w)} frames, not {spec.frames}")
    for seed in range(base, base + WORLD_TRIES):
        world = make_world(seed, spec.kind)
        inside = bool(world.in_bounds(c2w[:, :3, 3], DEFAULT_MARGIN).all())
        if inside and trajectory_clearance(world, c2w) >= DEFAULT_MARGIN:
            return Clip(spec, seed, world, spec.action, c2w, motion_type(spec.action, random_walk=False))
    raise RuntimeError(
        f"clip {spec.name}: no {spec.kind} world among seeds {base}.. keeps {spec.action!r} in free space"
    )


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def per_second(values: np.ndarray, fps: float) -> list[float]:
    """Means of per-frame values of frames 1.. in windows of one second (`fps` frames); the
    last window may be shorter."""
    step = max(1, round(fps))
    return [float(np.mean(values[i : i + step])) for i in range(0, len(values), step)]


def yaw_pitch_deg(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Yaw (right > 0) and pitch (up > 0) of each camera's viewing direction, in the frame of
    camera 0 (OpenCV axes: x right, y down, z forward), degrees."""
    rel = np.linalg.inv(c2w[0]) @ c2w
    forward = rel[:, :3, 2]
    yaw = np.degrees(np.arctan2(forward[:, 0], forward[:, 2]))
    pitch = np.degrees(np.arctan2(-forward[:, 1], np.hypot(forward[:, 0], forward[:, 2])))
    return yaw, pitch


def turn_from_first_deg(c2w: np.ndarray) -> np.ndarray:
    """Rotation angle (degrees) of every camera relative to camera 0."""
    relative = np.swapaxes(c2w[:1, :3, :3], -1, -2) @ c2w[:, :3, :3]
    cos = (np.trace(relative, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def motion_measures(estimated: np.ndarray, commanded: np.ndarray) -> dict:
    """How much of the commanded motion is visible in the estimated poses (both (N, 4, 4)).

    yaw / pitch: commanded and estimated angle at the frame where the commanded one is largest
    in magnitude (the last frame when it never moves). rotation: the same for the total
    rotation angle from camera 0. travel: commanded distance (metres) and the angle between
    the commanded and estimated directions of the last frame's displacement, both in camera
    0's frame (monocular poses have no scale, but a direction); an estimate that does not move
    gets 90 degrees (what a random direction averages), a commanded travel under MIN_TRAVEL
    gets None.
    """
    out: dict = {}
    for name, (cmd, est) in zip(("yaw_deg", "pitch_deg"), zip(yaw_pitch_deg(commanded), yaw_pitch_deg(estimated))):
        frame = int(np.argmax(np.abs(cmd))) if np.abs(cmd).max() > 1e-6 else len(cmd) - 1
        out[name] = {"frame": frame, "commanded": float(cmd[frame]), "estimated": float(est[frame])}
    cmd_angle, est_angle = turn_from_first_deg(commanded), turn_from_first_deg(estimated)
    frame = peak_frame(commanded)
    out["rotation_deg"] = {"frame": frame, "commanded": float(cmd_angle[frame]), "estimated": float(est_angle[frame])}
    cmd_move = (np.linalg.inv(commanded[0]) @ commanded[-1])[:3, 3]
    est_move = (np.linalg.inv(estimated[0]) @ estimated[-1])[:3, 3]
    direction_err = None
    if np.linalg.norm(cmd_move) >= MIN_TRAVEL:
        norm = np.linalg.norm(est_move)
        if norm <= 1e-9 * max(1.0, np.abs(estimated[:, :3, 3]).max()):
            direction_err = 90.0
        else:
            cos = float(cmd_move @ est_move / (np.linalg.norm(cmd_move) * norm))
            direction_err = math.degrees(math.acos(max(-1.0, min(1.0, cos))))
    out["travel"] = {"commanded_m": float(np.linalg.norm(cmd_move)), "direction_err_deg": direction_err}
    return out


def peak_frame(commanded: np.ndarray) -> int:
    """The frame where a commanded path (N, 4, 4) has moved furthest from camera 0: where its
    rotation from camera 0 peaks, or the last frame of a path that does not rotate."""
    angle = turn_from_first_deg(commanded)
    return int(np.argmax(angle)) if angle.max() > 1e-6 else len(commanded) - 1


def peak_psnr(psnr_per_frame: Sequence[float], frame: int) -> float:
    """Mean PSNR of the frames within PEAK_WINDOW of `frame` (`psnr_per_frame[i]` is frame
    i + 1; frame 0, the input, is not scored).

    Pose estimates of small, blurry videos understate motion; pixels do not: where the camera
    has moved furthest, a video that does not follow it falls far behind the ground truth."""
    lo, hi = max(1, frame - PEAK_WINDOW), min(len(psnr_per_frame), frame + PEAK_WINDOW)
    return float(np.mean(psnr_per_frame[lo - 1 : hi]))


def _camera_scores(estimated: np.ndarray | None, commanded: np.ndarray, failure: str | None) -> dict:
    """Camera errors (SANA-WM means) and motion measures of one video; a failed estimate is
    scored as the identity (static camera)."""
    failed = estimated is None
    if failed:
        estimated = np.tile(np.eye(4), (len(commanded), 1, 1))
    summary = camera_errors(estimated, commanded).summary()
    return {
        "rot_err_deg": summary["rot_err_deg"],
        "trans_err_rel": summary["trans_err_rel"],
        "cammc_rel": summary["cammc_rel"],
        "pose_failed": failed,
        "failure": failure,
        "motion": motion_measures(estimated, commanded),
    }


# ---------------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------------


@dataclass
class EvalSettings:
    """steps: sampling steps (None: the model's default); seed: generation seed of clip i is
    seed + i; pose_stride: poses are estimated on every n-th frame (1: all; short clips track
    better frame to frame); workers: processes for pose estimation (0: in this process);
    strip_clips: how many example clips get a PNG strip."""

    steps: int | None = None
    seed: int = 0
    pose_stride: int = 1
    workers: int = 0
    strip_clips: int = 4
    pose: PoseEstimationConfig = field(default_factory=lambda: PoseEstimationConfig(backend="opencv"))

    def __post_init__(self) -> None:
        if self.steps is not None and (isinstance(self.steps, bool) or self.steps < 1):
            raise UserInputError(f"steps must be a positive integer, got {self.steps!r}")
        if self.pose_stride < 1:
            raise UserInputError(f"pose stride must be at least 1, got {self.pose_stride}")
        if self.workers < 0:
            raise UserInputError(f"workers must be >= 0, got {self.workers}")


@dataclass
class Evaluation:
    """The report (JSON-ready dict) and, for the strips, the frames of a few example clips:
    name -> {"ground_truth" | "model" | "no_camera": (F, H, W, 3) uint8}."""

    report: dict
    examples: dict[str, dict[str, np.ndarray]]


class _PoseJobs:
    """Pose estimation, in a pool of processes (spawned: the parent may hold CUDA) or inline.

    Jobs run `estimate_poses_with_backend` itself, so nothing of this script has to be
    importable in the workers.
    """

    def __init__(self, workers: int, config: PoseEstimationConfig) -> None:
        self.config = config
        self.pool = None
        if workers > 0:
            import cv2

            self.pool = multiprocessing.get_context("spawn").Pool(workers, initializer=cv2.setNumThreads, initargs=(1,))

    def submit(self, frames: np.ndarray, intrinsics: np.ndarray) -> Callable[[], tuple[np.ndarray | None, str | None]]:
        """Start one estimate; the returned function waits for it: (poses, None) or (None, why)."""
        args = (frames, intrinsics, self.config)
        if self.pool is None:
            outcome = _catch(lambda: estimate_poses_with_backend(*args))
            return lambda: outcome
        pending = self.pool.apply_async(estimate_poses_with_backend, args)
        return lambda: _catch(pending.get)

    def close(self, finished: bool) -> None:
        """Shut the workers down: after the last result, or at once when the run failed."""
        if self.pool is not None:
            if finished:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()


def _catch(call: Callable[[], tuple[np.ndarray, str]]) -> tuple[np.ndarray | None, str | None]:
    try:
        return call()[0], None
    except PoseEstimationError as err:
        return None, str(err)
    except Exception as err:  # noqa: BLE001  (the estimator crashing on a strange video = a failed estimate, on record)
        print(f"warning: pose estimation raised {type(err).__name__}: {err}", file=sys.stderr)
        return None, f"{type(err).__name__}: {err}"


def _pick_examples(clips: Sequence[Clip], count: int) -> set[str]:
    """Names of up to `count` clips for the strips: one of each motion family first."""
    chosen: list[str] = []
    for family in ("forward", "yaw", "pitch", "walk", "mixed"):
        match = next((c.spec.name for c in clips if c.motion.startswith(family)), None)
        if match and len(chosen) < count:
            chosen.append(match)
    for c in clips:
        if len(chosen) < count and c.spec.name not in chosen:
            chosen.append(c.spec.name)
    return set(chosen)


def evaluate(
    model: WorldModel,
    specs: Sequence[ClipSpec],
    settings: EvalSettings | None = None,
    log: Callable[[str], None] = print,
) -> Evaluation:
    """Render, generate and score every clip (see the module doc); returns the report."""
    settings = settings or EvalSettings()
    start = time.perf_counter()
    s = model.settings
    size = model.image_size
    k = default_intrinsics(size, s.fov_deg)
    clips = [resolve_clip(spec, s.translation_speed, s.rotation_speed_deg) for spec in specs]
    strip_names = _pick_examples(clips, settings.strip_clips)
    steps = s.steps if settings.steps is None else settings.steps
    # scoring_s: image metrics, and pose estimation too when it runs in this process (workers=0)
    timing = {"render_s": 0.0, "generate_s": 0.0, "scoring_s": 0.0}

    jobs = _PoseJobs(settings.workers, settings.pose)
    rows, waits, examples = [], [], {}
    finished = False
    try:
        for index, clip in enumerate(clips):
            frames = clip.spec.frames
            intrinsics = k.expand(frames, 4)
            t0 = time.perf_counter()
            with torch.no_grad():
                device = model.device
                truth = render(clip.world.to(device), clip.c2w.to(device), intrinsics.to(device), size)
            truth = truth.cpu().numpy()
            t1 = time.perf_counter()
            trajectory = Trajectory(clip.c2w, intrinsics, size)
            seed = settings.seed + clip.spec.index
            request = {"trajectory": trajectory, "steps": steps, "seed": seed}
            videos = {
                "model": model.generate(truth[0], **request).frames,
                "repeat_first_frame": np.repeat(truth[:1], frames, axis=0),
                "no_camera": model.generate(truth[0], **request, camera_cfg=0.0).frames,
            }
            t2 = time.perf_counter()
            sampled = np.arange(0, frames, settings.pose_stride)
            waits.append({m: jobs.submit(v[sampled], k.numpy()) for m, v in {REFERENCE: truth, **videos}.items()})
            row = {
                "name": clip.spec.name,
                "kind": clip.spec.kind,
                "world_seed": clip.world_seed,
                "action": clip.action,
                "motion": clip.motion,
                "frames": frames,
                "generation_seed": seed,
                "peak_frame": peak_frame(clip.c2w.numpy()),
                "methods": {},
                REFERENCE: {},
            }
            for method, video in videos.items():
                p = psnr(video[1:], truth[1:]).numpy()
                q = ssim(video[1:], truth[1:]).numpy()
                row["methods"][method] = {
                    "psnr_per_second": per_second(p, s.fps),
                    "ssim_per_second": per_second(q, s.fps),
                    "psnr": float(p.mean()),
                    "ssim": float(q.mean()),
                    "psnr_per_frame": [round(float(v), 3) for v in p],
                    "ssim_per_frame": [round(float(v), 4) for v in q],
                }
            rows.append(row)
            if clip.spec.name in strip_names:
                examples[clip.spec.name] = {"ground_truth": truth, **{m: videos[m] for m in ("model", "no_camera")}}
            t3 = time.perf_counter()
            timing["render_s"] += t1 - t0
            timing["generate_s"] += t2 - t1
            timing["scoring_s"] += t3 - t2
            m = row["methods"]["model"]
            log(f"[{index + 1}/{len(clips)}] {clip.spec.name} (world {clip.world_seed}, {clip.action}): "
                f"model PSNR {m['psnr']:.2f} SSIM {m['ssim']:.3f} ({t3 - t0:.1f} s)")  # fmt: skip

        t4 = time.perf_counter()
        for clip, row, pending in zip(clips, rows, waits):
            commanded = clip.c2w.double().numpy()[:: settings.pose_stride]
            for method, wait in pending.items():
                estimated, failure = wait()
                entry = row[REFERENCE] if method == REFERENCE else row["methods"][method]
                entry["camera"] = _camera_scores(estimated, commanded, failure)
        timing["pose_wait_s"] = time.perf_counter() - t4
        finished = True
    finally:
        jobs.close(finished)
    timing["total_s"] = time.perf_counter() - start

    report = {
        "model_settings": asdict(s),
        "device": str(model.device),
        "steps": steps,
        "mode": "bidirectional",
        "intrinsics": [float(v) for v in k],
        "pose": {"backend": settings.pose.backend, "stride": settings.pose_stride},
        "methods": list(METHODS),
        "pose_reference": REFERENCE,
        "num_clips": len(rows),
        "summary": summarise(rows),
        "visibility": visibility(rows),
        "clips": rows,
        "timing": {key: round(v, 2) for key, v in timing.items()},
    }
    report["beats_baselines"] = beats_baselines(report["summary"])
    return Evaluation(report, examples)


# ---------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------

_HIGHER_BETTER = ("psnr", "ssim")
_LOWER_BETTER = ("rot_err_deg", "trans_err_rel", "cammc_rel")


def _camera_of(row: dict, method: str) -> dict:
    return (row[REFERENCE] if method == REFERENCE else row["methods"][method])["camera"]


def summarise(rows: list[dict]) -> dict:
    """Per method: means over clips of every score, PSNR/SSIM per second, pose failures; for
    the ground-truth reference only the camera scores."""
    out = {REFERENCE: {
        **{key: float(np.mean([_camera_of(r, REFERENCE)[key] for r in rows])) for key in _LOWER_BETTER},
        "pose_failures": int(sum(_camera_of(r, REFERENCE)["pose_failed"] for r in rows)),
    }}  # fmt: skip
    for method in METHODS:
        scores = [r["methods"][method] for r in rows]
        seconds = min(len(s["psnr_per_second"]) for s in scores)
        out[method] = {
            "psnr_per_second": [float(np.mean([s["psnr_per_second"][i] for s in scores])) for i in range(seconds)],
            "ssim_per_second": [float(np.mean([s["ssim_per_second"][i] for s in scores])) for i in range(seconds)],
            "psnr": float(np.mean([s["psnr"] for s in scores])),
            "ssim": float(np.mean([s["ssim"] for s in scores])),
            **{key: float(np.mean([s["camera"][key] for s in scores])) for key in _LOWER_BETTER},
            "pose_failures": int(sum(s["camera"]["pose_failed"] for s in scores)),
        }
    return out


def beats_baselines(summary: dict) -> dict:
    """For each score (and each second of PSNR / SSIM): is the model better than both baselines?"""
    model, baselines = summary["model"], [summary[m] for m in METHODS if m != "model"]
    out = {}
    for key in _HIGHER_BETTER:
        for i, value in enumerate(model[f"{key}_per_second"]):
            out[f"{key}_second_{i + 1}"] = all(value > b[f"{key}_per_second"][i] for b in baselines)
    for key in _LOWER_BETTER:
        out[key] = all(model[key] < b[key] for b in baselines)
    out["all"] = all(out.values())
    return out


def visibility(rows: list[dict]) -> dict:
    """Per motion type and method (and the ground-truth reference): mean commanded vs
    estimated peak yaw, pitch and total rotation; how many clips turn the commanded way by at
    least MIN_VISIBLE_DEG (of those commanded to turn at least SIGN_THRESHOLD_DEG); the median
    estimated / commanded magnitude; the mean travel-direction error; the mean PSNR around
    each clip's peak frame (`peak_psnr`)."""
    out: dict = {}
    present = {r["motion"] for r in rows}
    for motion in [m for m in MOTIONS if m in present]:
        group = [r for r in rows if r["motion"] == motion]
        out[motion] = {"clips": len(group)}
        for method in (REFERENCE, *METHODS):
            entry: dict = {}
            for angle in ("yaw_deg", "pitch_deg"):
                measured = [_camera_of(r, method)["motion"][angle] for r in group]
                pairs = [(m["commanded"], m["estimated"]) for m in measured]
                cmd, est = np.array(pairs).T
                turning = np.abs(cmd) >= SIGN_THRESHOLD_DEG
                right_way = (np.sign(est) == np.sign(cmd)) & (np.abs(est) >= MIN_VISIBLE_DEG)
                entry[angle] = {
                    "commanded_mean": float(cmd.mean()),
                    "estimated_mean": float(est.mean()),
                    "right_way": f"{int(right_way[turning].sum())}/{int(turning.sum())}",
                    "magnitude_ratio_median": float(np.median(est[turning] / cmd[turning])) if turning.any() else None,
                }
            rotation = [_camera_of(r, method)["motion"]["rotation_deg"] for r in group]
            entry["rotation_deg"] = {
                "commanded_mean": float(np.mean([x["commanded"] for x in rotation])),
                "estimated_mean": float(np.mean([x["estimated"] for x in rotation])),
            }
            errors = [_camera_of(r, method)["motion"]["travel"]["direction_err_deg"] for r in group]
            errors = [e for e in errors if e is not None]
            entry["travel_direction_err_deg"] = float(np.mean(errors)) if errors else None
            if method != REFERENCE:
                entry["psnr_at_peak"] = float(np.mean(
                    [peak_psnr(r["methods"][method]["psnr_per_frame"], r["peak_frame"]) for r in group]))  # fmt: skip
            out[motion][method] = entry
    return out


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def _fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _summary_cells(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows (methods, then the ground-truth pose reference) of the summary table."""
    seconds = len(report["summary"]["model"]["psnr_per_second"])
    head = (["method"] + [f"PSNR s{i + 1}" for i in range(seconds)] + [f"SSIM s{i + 1}" for i in range(seconds)]
            + ["RotErr", "TransErr", "CamMC", "pose fail"])  # fmt: skip
    rows = []
    for method in (*METHODS, REFERENCE):
        x = report["summary"][method]
        images = ["-"] * (2 * seconds) if method == REFERENCE else (
            [f"{v:.2f}" for v in x["psnr_per_second"]] + [f"{v:.4f}" for v in x["ssim_per_second"]])  # fmt: skip
        camera = [f"{x['rot_err_deg']:.3f}", f"{x['trans_err_rel']:.4f}", f"{x['cammc_rel']:.4f}",
                  f"{x['pose_failures']}/{report['num_clips']}"]  # fmt: skip
        rows.append([method if method != REFERENCE else f"({REFERENCE})"] + images + camera)
    return head, rows


def summary_table(report: dict) -> str:
    """The compact table printed at the end (one row per method, then the pose reference)."""
    head, rows = _summary_cells(report)
    lines = ["  ".join(f"{c:>10}" if i else f"{c:<20}" for i, c in enumerate(line)) for line in [head, *rows]]
    beats = report["beats_baselines"]
    lines.append("model beats both baselines on: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in beats.items()))
    return "\n".join(lines)


def markdown_report(report: dict, strips: list[str]) -> str:
    s, n = report["model_settings"], report["num_clips"]
    seconds = len(report["summary"]["model"]["psnr_per_second"])
    fps = s["fps"]
    spans = ", ".join(f"s{i + 1} = frames {1 + i * round(fps)}-{(i + 1) * round(fps)}" for i in range(seconds))
    md = [
        "# Embedded model: camera following on held-out procedural worlds",
        "",
        f"{n} clips (world seeds >= 2^31, never trained on), {s['height']}x{s['width']}, {fps:g} fps, "
        f"fov {s['fov_deg']} deg; {report['mode']} generation, {report['steps']} steps, device {report['device']}. "
        f"Poses: `sanawm.evaluation` {report['pose']['backend']} backend with pose stride {report['pose']['stride']}, "
        "known intrinsics, similarity-aligned to the commanded path; RotErr (deg), TransErr, CamMC are SANA-WM's "
        "per-clip means, averaged over clips.",
        "",
        "Methods: **model** (as users run it); **repeat_first_frame** (ground-truth frame 0 repeated); "
        "**no_camera** (same model and seed, DiT without raymap / Plücker inputs: camera_cfg = 0). "
        "A video whose pose estimation fails is scored as a static (identity) camera and counted under 'pose fail'. "
        f"({REFERENCE}): poses estimated from the ground-truth renders, the floor that the pose estimator sets.",
        "",
        f"## Summary ({spans}; frame 0 is the input)",
        "",
    ]
    head, rows = _summary_cells(report)
    md += ["| " + " | ".join(line) + " |" for line in [head, ["---"] * len(head), *rows]]
    beats = report["beats_baselines"]
    verdicts = ", ".join(f"{k}: {'yes' if v else '**no**'}" for k, v in beats.items())
    md += ["", f"Model better than both baselines: {verdicts}", ""]

    md += [
        "## Is the motion visible?",
        "",
        "Per motion type: commanded vs estimated yaw / pitch (degrees, camera 0's frame, yaw > 0 = right, "
        "pitch > 0 = up) at the frame where the commanded angle peaks, averaged over the clips; 'way' counts clips "
        f"whose estimate turns the commanded way by >= {MIN_VISIBLE_DEG:g} deg, of those commanded to turn >= "
        f"{SIGN_THRESHOLD_DEG:g} deg; 'ratio' is the median "
        "estimated / commanded magnitude; 'rot' the total rotation angle from frame 0 at the frame where the commanded "
        "one peaks; 'dir err' the mean angle between commanded and estimated direction of "
        f"travel (clips that travel >= {MIN_TRAVEL} m; a static estimate counts 90 deg); 'PSNR peak' the PSNR "
        f"against the ground truth over frames peak +- {PEAK_WINDOW}, where peak is the frame where the commanded "
        "rotation from frame 0 is largest (the last frame for a path that does not rotate): a video that does not "
        "follow the camera falls behind there even when its pose estimate is unreliable.",
        "",
        "| motion | clips | method | yaw cmd | yaw est | yaw way | yaw ratio | pitch cmd | pitch est | pitch way "
        "| pitch ratio | rot cmd | rot est | dir err | PSNR peak |",
        "|" + "---|" * 15,
    ]
    for motion, group in report["visibility"].items():
        for method in (REFERENCE, *METHODS):
            e = group[method]
            y, p = e["yaw_deg"], e["pitch_deg"]
            md.append(
                f"| {motion} | {group['clips']} | {method} | {y['commanded_mean']:.1f} | {y['estimated_mean']:.1f} | "
                f"{y['right_way']} | {_fmt(y['magnitude_ratio_median'])} | {p['commanded_mean']:.1f} | "
                f"{p['estimated_mean']:.1f} | {p['right_way']} | {_fmt(p['magnitude_ratio_median'])} | "
                f"{e['rotation_deg']['commanded_mean']:.1f} | {e['rotation_deg']['estimated_mean']:.1f} | "
                f"{_fmt(e['travel_direction_err_deg'], 1)} | {_fmt(e.get('psnr_at_peak'))} |"
            )
    md += ["", "## Clips", "",
           "| clip | world seed | action | model PSNR | model SSIM | model RotErr | no_camera RotErr "
           f"| repeat RotErr | {REFERENCE} RotErr | model yaw cmd/est | model pitch cmd/est | model dir err |",
           "|" + "---|" * 12]  # fmt: skip
    for r in report["clips"]:
        m = r["methods"]["model"]
        mo = m["camera"]["motion"]
        fail = " (failed)" if m["camera"]["pose_failed"] else ""
        md.append(
            f"| {r['name']} | {r['world_seed']} | `{r['action']}` | {m['psnr']:.2f} | {m['ssim']:.3f} | "
            f"{m['camera']['rot_err_deg']:.2f}{fail} | {r['methods']['no_camera']['camera']['rot_err_deg']:.2f} | "
            f"{r['methods']['repeat_first_frame']['camera']['rot_err_deg']:.2f} | "
            f"{r[REFERENCE]['camera']['rot_err_deg']:.2f} | "
            f"{mo['yaw_deg']['commanded']:.1f} / {mo['yaw_deg']['estimated']:.1f} | "
            f"{mo['pitch_deg']['commanded']:.1f} / {mo['pitch_deg']['estimated']:.1f} | "
            f"{_fmt(mo['travel']['direction_err_deg'], 1)} |"
        )
    if strips:
        md += ["", "## Examples", "",
               "Rows: ground truth, model, model without camera; columns: frames spread over the clip.", ""]
        md += [f"![{name}]({name})" for name in strips]
    t = report["timing"]
    md += ["", f"Time: {t['total_s']:.0f} s in all (render {t['render_s']:.0f} s, generation {t['generate_s']:.0f} s, "
           f"waiting for poses {t['pose_wait_s']:.0f} s).", ""]  # fmt: skip
    return "\n".join(md)


def save_strip(path: Path, videos: dict[str, np.ndarray]) -> None:
    """Rows ground truth / model / no camera, STRIP_FRAMES frames spread over the clip."""
    from PIL import Image

    frames = len(videos["ground_truth"])
    picks = np.linspace(0, frames - 1, STRIP_FRAMES).round().astype(int)
    tiles = np.concatenate([videos[row][picks] for row in ("ground_truth", "model", "no_camera")])
    image = Image.fromarray(frame_strip(tiles, columns=STRIP_FRAMES))
    image.save(path, format="PNG", optimize=True)
    if path.stat().st_size > MAX_STRIP_BYTES:  # busy textures: a 256-colour palette keeps it small
        image.quantize(256).save(path, format="PNG", optimize=True)


def rescore(report: dict) -> dict:
    """The report with its summaries (summary, visibility, verdicts) recomputed from its clips,
    so that a change in how clips are summarised needs no new generation."""
    rows = [dict(row) for row in report["clips"]]
    for row in rows:
        if "peak_frame" not in row:  # reports written before the peak measure existed
            # The peak frame does not depend on the speeds, which scale every angle alike.
            row["peak_frame"] = peak_frame(action_to_c2w(row["action"]).numpy())
    report = {**report, "clips": rows, "summary": summarise(rows), "visibility": visibility(rows)}
    report["beats_baselines"] = beats_baselines(report["summary"])
    return report


def write_outputs(evaluation: Evaluation, out: Path) -> list[Path]:
    """report.json, report.md and one strip_<clip>.png per example clip; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    strips = []
    for name, videos in evaluation.examples.items():
        path = out / f"strip_{name}.png"
        save_strip(path, videos)
        strips.append(path)
    return [*_write_report(evaluation.report, out, [p.name for p in strips]), *strips]


def _write_report(report: dict, out: Path, strips: list[str]) -> list[Path]:
    """report.json and report.md (linking the strip PNGs named in `strips`) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(markdown_report(report, strips))
    return [out / "report.json", out / "report.md"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="folder for report.json, report.md and the PNG strips")
    p.add_argument("--model", help="model folder (default: the embedded model)")
    p.add_argument("--limit", type=int, help="evaluate only the first N of the 32 clips")
    p.add_argument("--clips", nargs="+", metavar="NAME", help="evaluate only these clips (names as in the report)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="generation seed of clip i is SEED + i (default 0)")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--pose-stride", type=int, default=1, help="estimate poses on every n-th frame (default 1)")
    default_workers = min(12, max(0, (os.cpu_count() or 1) - 1))
    p.add_argument("--workers", type=int, default=default_workers,
                   help=f"processes for pose estimation, 0 = none (default {default_workers})")  # fmt: skip
    p.add_argument("--rescore", type=Path, metavar="REPORT.json",
                   help="generate nothing: recompute the summaries of an earlier report.json, write report.json "
                        "and report.md to --out (keeping the strip_*.png found there)")  # fmt: skip
    args = p.parse_args(argv)
    if args.rescore is not None:
        try:
            report = rescore(read_json_object(args.rescore, "evaluation report"))
        except (KeyError, TypeError, ValueError) as err:
            print(f"error: {args.rescore} is not a report of this script ({type(err).__name__}: {err})", file=sys.stderr)
            return 2
        except UserInputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        paths = _write_report(report, args.out, sorted(path.name for path in args.out.glob("strip_*.png")))
        print(summary_table(report))
        print("wrote " + ", ".join(str(p) for p in paths))
        return 0
    try:
        clips = default_clips()
        if args.limit is not None:
            if not 1 <= args.limit <= len(clips):
                raise UserInputError(f"--limit must be between 1 and {len(clips)}, got {args.limit}")
            clips = clips[: args.limit]
        if args.clips:
            unknown = sorted(set(args.clips) - {c.name for c in clips})
            if unknown:
                raise UserInputError(f"--clips: no clip named {', '.join(unknown)}; names look like {clips[0].name}")
            clips = [c for c in clips if c.name in args.clips]
        settings = EvalSettings(steps=args.steps, seed=args.seed, pose_stride=args.pose_stride, workers=args.workers)
        model = WorldModel.load(args.model, device=args.device)
        print(f"model: {args.model or 'embedded'} on {model.device}; {len(clips)} clips, "
              f"{settings.workers} pose workers")  # fmt: skip
        evaluation = evaluate(model, clips, settings)
        paths = write_outputs(evaluation, args.out)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print()
    print(summary_table(evaluation.report))
    print(f"\ntime {evaluation.report['timing']['total_s']:.0f} s; wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
