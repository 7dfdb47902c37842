"""Offline jobs (POST /v1/videos, recordings): kept in SQLite so a restart loses none.

A job row is committed before the client hears "accepted"; results are written under
temporary names and renamed into place before the row says "done". At start-up, jobs that
were running when the process stopped go back to the queue and run again from the start.

Files: DATA/jobs.sqlite, DATA/results/<id>.mp4 and <id>.camera.npz. Job ids are 32 hex
digits made here; a path is only ever built from an id that matched that pattern.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("sanawm.serve")

JOB_ID = re.compile(r"[0-9a-f]{32}")
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
RESULT_SUFFIXES = {"video": ".mp4", "camera": ".camera.npz"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,            -- 'video' (POST /v1/videos) or 'recording'
    status TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    params TEXT NOT NULL,          -- JSON: action / trajectory / frames / steps / seed / prompt
    image BLOB,                    -- the uploaded image as sent (already checked), or NULL
    frames_done INTEGER NOT NULL DEFAULT 0,
    error TEXT
)
"""


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    status: str
    created: float
    params: dict
    image: bytes | None
    frames_done: int
    error: str | None

    def public(self) -> dict:
        """What GET /v1/videos/<id> answers."""
        doc = {"id": self.id, "kind": self.kind, "status": self.status, "created": self.created,
               "frames_done": self.frames_done}  # fmt: skip
        if self.params.get("frames") is not None:
            doc["frames"] = self.params["frames"]
        if self.error:
            doc["error"] = self.error
        if self.status == DONE:
            doc["video_url"] = f"/v1/videos/{self.id}/content"
            doc["camera_url"] = f"/v1/videos/{self.id}/camera"
        return doc


class JobStore:
    """SQLite-backed job table plus the results folder; safe to use from several threads."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.results = self.data_dir / "results"
        self.results.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.data_dir / "jobs.sqlite", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        # Jobs cut off by a stop run again from the start.
        self._db.execute("UPDATE jobs SET status=?, frames_done=0 WHERE status=?", (QUEUED, RUNNING))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, kind: str, params: dict, image: bytes | None, status: str = QUEUED) -> str:
        job_id = uuid.uuid4().hex
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, kind, status, created, updated, params, image) VALUES (?,?,?,?,?,?,?)",
                (job_id, kind, status, now, now, json.dumps(params), image),
            )
        return job_id

    def get(self, job_id: str) -> Job | None:
        if not JOB_ID.fullmatch(job_id):
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT id, kind, status, created, params, image, frames_done, error FROM jobs WHERE id=?", (job_id,)
            ).fetchone()
        if row is None:
            return None
        return Job(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6], row[7])

    def count(self, status: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE status=?", (status,)).fetchone()[0]

    def claim_next(self) -> Job | None:
        """The oldest queued job, marked running."""
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM jobs WHERE status=? ORDER BY created, rowid LIMIT 1", (QUEUED,)
            ).fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE jobs SET status=?, updated=? WHERE id=?", (RUNNING, time.time(), row[0]))
        return self.get(row[0])

    def progress(self, job_id: str, frames_done: int) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET frames_done=?, updated=? WHERE id=?", (frames_done, time.time(), job_id))

    def finish(self, job_id: str, error: str | None = None) -> None:
        status = DONE if error is None else FAILED
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status=?, error=?, updated=?, image=NULL WHERE id=?", (status, error, time.time(), job_id)
            )

    def result_path(self, job_id: str, what: str) -> Path:
        """DATA/results/<id>.mp4 or .camera.npz (the id was checked against JOB_ID)."""
        if not JOB_ID.fullmatch(job_id):
            raise ValueError(f"bad job id {job_id!r}")
        return self.results / f"{job_id}{RESULT_SUFFIXES[what]}"

    def partial_path(self, job_id: str, what: str) -> Path:
        """Where a result is written before it is renamed into place (same suffix)."""
        path = self.result_path(job_id, what)
        return path.with_name(".part-" + path.name)
