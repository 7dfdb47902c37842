"""A fast stand-in for `WorldModel` that follows the streaming session API of
/work/notes/STREAM_API.md exactly (`wm.stream(...)` -> session with chunks, push_action,
push_poses, close, fps, image_size), for the server tests. Tests only.

Frames are tiny and made from the camera pose, so a test can tell motion from the pictures
too. The camera follows the real action language (`action_to_c2w`), relative to the last
generated pose, and holds still when the queued motion runs out. Each session records when
it finished each frame (for latency) and whether it was closed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from sanawm.camera import action_to_c2w, default_intrinsics
from sanawm.errors import UserInputError


@dataclass
class FakeChunk:
    start: int
    frames: np.ndarray
    c2w: np.ndarray
    intrinsics: np.ndarray


class FakeSession:
    def __init__(self, model: "FakeWorldModel", action, trajectory, frames) -> None:
        self.model = model
        self.fps = model.settings.fps
        self.image_size = model.image_size
        self.closed = False
        self.finished_at: dict[int, float] = {}
        self.chunks_started = 0
        self._pose = np.eye(4)
        self._queued: list[np.ndarray] = []
        if trajectory is not None:
            c2w = np.asarray(trajectory.c2w, dtype=np.float64)
            self._queued = list(c2w[1:])
            total = len(c2w) if frames is None else min(frames, len(c2w))
        else:
            total = frames
            if action is not None:
                self.push_action(action)
        self.total = total  # None: endless
        self._intrinsics = np.asarray(default_intrinsics(self.image_size, model.settings.fov_deg), dtype=np.float64)

    # -- the API --
    def push_action(self, action: str) -> None:
        rel = action_to_c2w(action).double().numpy()[1:]  # raises UserInputError on a bad string
        self._queued = [self._pose @ r for r in rel]

    def push_poses(self, rel_c2w) -> None:
        rel = np.asarray(rel_c2w, dtype=np.float64)
        if rel.ndim != 3 or rel.shape[1:] != (4, 4):
            raise UserInputError("poses must be (n, 4, 4)")
        self._queued = [self._pose @ r for r in rel]

    def close(self) -> None:
        self.closed = True

    def __iter__(self):
        index = 0
        while not self.closed and (self.total is None or index < self.total):
            count = self.model.first_chunk if index == 0 else self.model.chunk
            if self.total is not None:
                count = min(count, self.total - index)
            self.chunks_started += 1
            self.model.chunk_started.set()
            if self.model.chunk_delay_s:
                time.sleep(self.model.chunk_delay_s)
            poses = []
            for k in range(count):
                if index + k > 0 and self._queued:
                    self._pose = self._queued.pop(0)
                poses.append(self._pose.copy())
            c2w = np.stack(poses)
            chunk = FakeChunk(index, self.model.render(c2w), c2w, np.tile(self._intrinsics, (count, 1)))
            now = time.monotonic()
            for k in range(count):
                self.finished_at[index + k] = now
            index += count
            yield chunk


class FakeWorldModel:
    """`stream(...)` like `WorldModel.stream`; `sessions` lists every session opened."""

    def __init__(self, size=(32, 48), fps=16.0, first_chunk=5, chunk=4, chunk_delay_s=0.0, texture=False) -> None:
        self.image_size = size
        self.settings = SimpleNamespace(fps=fps, fov_deg=60.0)
        self.text_encoder = None
        self.first_chunk = first_chunk
        self.chunk = chunk
        self.chunk_delay_s = chunk_delay_s
        self.sessions: list[FakeSession] = []
        self.stream_calls: list[dict] = []
        self.chunk_started = threading.Event()
        # Seeded noise makes frames that compress like real pictures (tens of kB), not flat colour.
        self.texture = np.random.default_rng(0).integers(-40, 40, (*size, 3)) if texture else None

    def stream(self, image=None, *, action=None, trajectory=None, frames=None, prompt=None, seed=0, steps=None,
               cfg=None, camera_cfg=None, window=None, sink=None, progress=None) -> FakeSession:  # fmt: skip
        self.stream_calls.append({"image": image, "action": action, "frames": frames, "prompt": prompt,
                                  "seed": seed, "steps": steps})  # fmt: skip
        if action is not None:
            action_to_c2w(action)  # bad strings raise here, as the real API does
        session = FakeSession(self, action, trajectory, frames)
        self.sessions.append(session)
        return session

    def render(self, c2w: np.ndarray) -> np.ndarray:
        """(n, H, W, 3) uint8 frames whose colour follows the camera position and heading."""
        h, w = self.image_size
        n = len(c2w)
        frames = np.zeros((n, h, w, 3), dtype=np.uint8)
        frames[..., 0] = (128 + 100 * np.tanh(c2w[:, 0, 3]))[:, None, None]
        frames[..., 1] = (128 + 100 * np.tanh(c2w[:, 2, 3]))[:, None, None]
        frames[..., 2] = (128 + 120 * c2w[:, 0, 2])[:, None, None]
        if self.texture is not None:
            frames = np.clip(frames + self.texture, 0, 255).astype(np.uint8)
        return frames
