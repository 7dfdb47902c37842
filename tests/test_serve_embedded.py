"""End to end with the real embedded model: a live session over a loopback socket gives the
same frames and cameras as calling the streaming API directly, and an offline job gives the
same video."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from _serve_fixtures import open_session, receive_frame, receive_json, running_server

from sanawm.pipeline import WorldModel
from sanawm.serve.config import ServeConfig

STEPS, FRAMES, ACTION = 1, 9, "d-3,l-5"  # few steps and frames: the server is under test, not the model


@pytest.fixture(scope="module")
def wm():
    return WorldModel.load(device="cpu")


@pytest.fixture(scope="module")
def direct(wm) -> tuple[np.ndarray, np.ndarray]:
    """Frames and cameras from the streaming API called directly."""
    chunks = list(wm.stream(action=ACTION, frames=FRAMES, steps=STEPS, seed=0))
    return np.concatenate([c.frames for c in chunks]), np.concatenate([c.c2w for c in chunks])


def test_live_session_matches_the_streaming_api(wm, direct, tmp_path):
    expected_frames, expected_c2w = direct
    with running_server(wm, ServeConfig(data_dir=tmp_path / "data"), name="embedded") as (host, app):
        with open_session(host) as ws:
            ws.send(json.dumps({"type": "init", "action": ACTION, "num_frames": FRAMES, "steps": STEPS}))
            assert receive_json(ws, timeout=120) == {"type": "ready", "model": "embedded", "fps": 16.0,
                                                     "size": [128, 128]}  # fmt: skip
            headers, images = [], []
            for _ in range(len(expected_frames)):
                header, image = receive_frame(ws, timeout=120)
                headers.append(header)
                images.append(np.asarray(Image.open(io.BytesIO(image)).convert("RGB")))
            assert receive_json(ws, timeout=120) == {"type": "end"}
    assert [h["index"] for h in headers] == list(range(len(expected_frames)))
    np.testing.assert_allclose(np.array([h["c2w"] for h in headers]).reshape(-1, 4, 4), expected_c2w, atol=1e-9)
    # JPEG at quality 90 changes pixels by a few levels; another seed or pose would by tens.
    error = np.abs(np.stack(images).astype(float) - expected_frames.astype(float)).mean()
    assert error < 4.0, error
    assert np.abs(expected_frames[1:].astype(float) - expected_frames[:-1].astype(float)).mean() > 2 * error


def test_offline_job_with_the_embedded_model(wm, direct, tmp_path):
    from starlette.testclient import TestClient

    from sanawm.serve.app import create_app
    from sanawm.video import read_video

    expected_frames, _ = direct
    app = create_app(wm, "embedded", ServeConfig(data_dir=tmp_path / "data"))
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        job = client.post("/v1/videos", json={"action": ACTION, "frames": FRAMES, "steps": STEPS}).json()
        deadline = time.monotonic() + 120
        while (job := client.get(f"/v1/videos/{job['id']}").json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert job["status"] == "done", job
        (tmp_path / "job.mp4").write_bytes(client.get(job["video_url"]).content)
    frames, _ = read_video(tmp_path / "job.mp4")
    assert frames.shape == expected_frames.shape
    assert np.abs(frames.astype(float) - expected_frames.astype(float)).mean() < 4.0  # H.264 at crf 18
