"""Limits and settings of one server, in one place (`ServeConfig`).

Every number that bounds what a client can make the server hold (sessions, queued frames,
message and upload sizes, job queue, frames per job) lives here, so a deployment reads its
resource ceiling off one dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeConfig:
    """Settings of a `sanawm serve` instance.

    token: when set, every /v1 request needs it (`Authorization: Bearer T`, or for the
    WebSocket the subprotocol `bearer.T`, since browsers cannot set headers there).
    data_dir: where offline jobs (SQLite + results) live; a restart picks them up again.
    """

    data_dir: Path
    token: str | None = None
    # Live sessions.
    max_sessions: int = 2
    frame_queue: int = 24          # encoded frames buffered per session; the model waits beyond it
    idle_timeout_s: float = 60.0   # no message from the client (the page sends heartbeats)
    lifetime_s: float = 1800.0     # hard cap on one session
    max_session_frames: int = 100_000
    max_steps: int = 100
    max_poses_per_event: int = 1024
    max_event_bytes: int = 256 * 1024
    # Uploads (init image, offline job image, recordings).
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    max_request_bytes: int = 32 * 1024 * 1024
    # Offline jobs.
    max_queued_jobs: int = 32
    max_job_frames: int = 2000
    max_recording_frames: int = 4000

    @property
    def max_init_bytes(self) -> int:
        """An init message carries a base64 image: 4/3 of the image limit plus room for the rest."""
        return self.max_image_bytes * 4 // 3 + 64 * 1024
