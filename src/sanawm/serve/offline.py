"""Offline work: checking a POST /v1/videos request, running queued jobs, writing recordings.

A video job runs through the same streaming API as live sessions (`model.stream`), one chunk
per model turn, so a long job never freezes the live sessions that share the model.
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np

from sanawm.camera import Trajectory, default_intrinsics, save_camera_npz
from sanawm.camera.actions import parse_action
from sanawm.errors import UserInputError
from sanawm.serve.config import ServeConfig
from sanawm.serve.images import decode_base64, decode_upload
from sanawm.serve.jobs import Job, JobStore
from sanawm.serve.protocol import MAX_PROMPT_CHARS
from sanawm.serve.scheduling import ModelTurns
from sanawm.video import VideoWriter

log = logging.getLogger("sanawm.serve")

_VIDEO_FIELDS = {"image", "action", "trajectory", "prompt", "frames", "steps", "seed"}
_TRAJECTORY_FIELDS = {"c2w", "intrinsics", "image_size"}


def check_video_request(doc: object, config: ServeConfig, model) -> tuple[dict, bytes | None]:
    """The job parameters and image bytes of a POST /v1/videos body; UserInputError if bad.

    Body: {"image": base64 (optional), exactly one of "action": "w-40,l-20" or "trajectory":
    {"c2w": [...], "intrinsics": [...] (optional), "image_size": [H, W] (optional)},
    "prompt", "frames", "steps", "seed" (optional)}. Trajectories come as data, never as paths.
    """
    if not isinstance(doc, dict):
        raise UserInputError("the body must be a JSON object")
    unknown = sorted(set(doc) - _VIDEO_FIELDS)
    if unknown:
        raise UserInputError(f"unknown field(s) {', '.join(unknown)}")
    image = None
    if doc.get("image") is not None:
        image = decode_base64(doc["image"], config.max_image_bytes)
        decode_upload(image, config.max_image_pixels)  # checked now, decoded again when the job runs
    action, trajectory = doc.get("action"), doc.get("trajectory")
    if (action is None) == (trajectory is None):
        raise UserInputError('give exactly one of "action" and "trajectory"')
    if action is not None:
        if not isinstance(action, str) or len(action) > 10_000:
            raise UserInputError("action must be a string like 'w-40,l-20'")
        poses = 1 + sum(segment.frames for segment in parse_action(action))
    else:
        if not isinstance(trajectory, dict) or "c2w" not in trajectory or set(trajectory) - _TRAJECTORY_FIELDS:
            raise UserInputError('trajectory must be an object with "c2w" and optional "intrinsics", "image_size"')
        if not isinstance(trajectory["c2w"], list):
            raise UserInputError("trajectory c2w must be a list of 4x4 matrices")
        poses = len(trajectory["c2w"])
    frames = doc.get("frames")
    if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int) or frames < 1):
        raise UserInputError(f"frames must be a positive integer, got {frames!r}")
    if frames is not None and frames > poses:
        raise UserInputError(f"the camera path has {poses} poses, fewer than the {frames} frames asked for")
    # Always a frame count: without one the streaming API would go on forever.
    frames = poses if frames is None else frames
    if frames > config.max_job_frames:
        raise UserInputError(f"a job makes at most {config.max_job_frames} frames; pass a shorter path or frames")
    steps = doc.get("steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= config.max_steps):
        raise UserInputError(f"steps must be an integer in [1, {config.max_steps}], got {steps!r}")
    seed = doc.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise UserInputError(f"seed must be an integer in [0, 2^63), got {seed!r}")
    prompt = doc.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS):
        raise UserInputError(f"prompt must be a string of at most {MAX_PROMPT_CHARS} characters")
    params = {"action": action, "trajectory": trajectory, "frames": frames, "steps": steps, "seed": seed,
              "prompt": prompt}  # fmt: skip
    if trajectory is not None:
        _trajectory(params, tuple(model.image_size), model.settings.fov_deg)  # checked now, not when the job runs
    return params, image


def _trajectory(params: dict, image_size: tuple[int, int], fov_deg: float) -> Trajectory | None:
    doc = params["trajectory"]
    if doc is None:
        return None
    size = doc.get("image_size") or image_size
    try:
        c2w = np.asarray(doc["c2w"], dtype=np.float64)
        intrinsics = doc.get("intrinsics")
        if intrinsics is None:
            intrinsics = default_intrinsics(tuple(size), fov_deg)
        return Trajectory(c2w, np.asarray(intrinsics, dtype=np.float64), size)
    except (TypeError, ValueError) as err:
        raise UserInputError(f"trajectory: {err}") from None


class JobRunner:
    """One thread that runs queued video jobs in order, sharing the model through `turns`."""

    def __init__(self, store: JobStore, model, turns: ModelTurns, config: ServeConfig) -> None:
        self.store = store
        self.model = model
        self.turns = turns
        self.config = config
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sanawm-jobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop between chunks; a job cut off here stays 'running' and is re-run at the next start."""
        self.stopping.set()
        self.wake.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            job = self.store.claim_next()
            if job is None:
                self.wake.wait(timeout=1.0)
                self.wake.clear()
                continue
            try:
                finished = self._run(job)
            except UserInputError as err:
                self.store.finish(job.id, error=str(err))
            except Exception as err:
                log.exception("job %s failed", job.id)
                self.store.finish(job.id, error=f"internal error: {type(err).__name__}")
            else:
                if finished:
                    self.store.finish(job.id)

    def _run(self, job: Job) -> bool:
        """Generate the job's video; False if the server stopped first."""
        p = job.params
        image = decode_upload(job.image, self.config.max_image_pixels) if job.image is not None else None
        trajectory = _trajectory(p, tuple(self.model.image_size), self.model.settings.fov_deg)
        video_part = self.store.partial_path(job.id, "video")
        camera_part = self.store.partial_path(job.id, "camera")
        c2w, intrinsics = [], []
        with self.turns.turn():
            session = self.model.stream(
                image, action=p["action"], trajectory=trajectory, frames=p["frames"], prompt=p["prompt"],
                seed=p["seed"], steps=p["steps"],
            )  # fmt: skip
        try:
            with VideoWriter(video_part, session.fps) as writer:
                chunks = iter(session)
                while True:
                    if self.stopping.is_set():
                        return False
                    with self.turns.turn():
                        chunk = next(chunks, None)
                    if chunk is None:
                        break
                    writer.write(chunk.frames)
                    c2w.append(chunk.c2w)
                    intrinsics.append(chunk.intrinsics)
                    self.store.progress(job.id, writer.frames_written)
        finally:
            session.close()
        save_camera_npz(camera_part, np.concatenate(c2w), np.concatenate(intrinsics), tuple(session.image_size))
        os.replace(video_part, self.store.result_path(job.id, "video"))
        os.replace(camera_part, self.store.result_path(job.id, "camera"))
        return True


def write_recording(store: JobStore, doc: object, model, config: ServeConfig) -> str:
    """A finished 'recording' job from frames the page received: {"fps", "frames": [base64
    JPEG/WebP/PNG], "c2w": [[16 floats], ...]} -> MP4 + camera file; returns the job id."""
    if not isinstance(doc, dict) or set(doc) != {"fps", "frames", "c2w"}:
        raise UserInputError('a recording is {"fps": number, "frames": [base64 images], "c2w": [[16 numbers], ...]}')
    fps, frames, c2w = doc["fps"], doc["frames"], doc["c2w"]
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 240:
        raise UserInputError(f"fps must be a number in (0, 240], got {fps!r}")
    if not isinstance(frames, list) or not 1 <= len(frames) <= config.max_recording_frames:
        raise UserInputError(f"a recording holds 1 to {config.max_recording_frames} frames")
    if not isinstance(c2w, list) or len(c2w) != len(frames):
        raise UserInputError("a recording needs one c2w per frame")
    try:
        poses = np.asarray(c2w, dtype=np.float64).reshape(len(frames), 4, 4)
    except (TypeError, ValueError):
        raise UserInputError("every c2w must be 16 numbers (row-major 4x4)") from None
    job_id = store.add("recording", {"frames": len(frames)}, None, status="running")
    video_part, camera_part = store.partial_path(job_id, "video"), store.partial_path(job_id, "camera")
    try:
        size = None
        with VideoWriter(video_part, fps) as writer:
            for k, text in enumerate(frames):
                image = np.asarray(decode_upload(decode_base64(text, config.max_image_bytes, f"frame {k}"),
                                                 config.max_image_pixels, f"frame {k}"))  # fmt: skip
                if size is None:
                    size = image.shape[:2]
                elif image.shape[:2] != size:
                    raise UserInputError(f"frame {k} is {image.shape[1]}x{image.shape[0]}, the first {size[1]}x{size[0]}")
                writer.write(image)
        intrinsics = default_intrinsics(size, model.settings.fov_deg)
        save_camera_npz(camera_part, poses, intrinsics, size)
        os.replace(video_part, store.result_path(job_id, "video"))
        os.replace(camera_part, store.result_path(job_id, "camera"))
    except UserInputError as err:
        store.finish(job_id, error=str(err))
        for part in (video_part, camera_part):
            part.unlink(missing_ok=True)
        raise
    store.finish(job_id)
    return job_id
