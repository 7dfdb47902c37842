"""HTTP side of `sanawm serve`: health, models, offline jobs in SQLite, recordings, limits."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from _fake_world_model import FakeWorldModel  # noqa: E402

from sanawm.camera import action_to_c2w, load_trajectory  # noqa: E402
from sanawm.serve.app import create_app  # noqa: E402
from sanawm.serve.config import ServeConfig  # noqa: E402
from sanawm.serve.jobs import JobStore  # noqa: E402
from sanawm.video import read_video  # noqa: E402

BASE = "http://127.0.0.1:8000"


def _client(model, tmp_path, **overrides) -> TestClient:
    app = create_app(model, "fake", ServeConfig(data_dir=tmp_path / "data", **overrides))
    return TestClient(app, base_url=BASE)


def _wait_for_job(client, job_id, timeout=20.0, **kwargs) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        doc = client.get(f"/v1/videos/{job_id}", **kwargs).json()
        if doc["status"] in ("done", "failed"):
            return doc
        assert time.monotonic() < deadline, doc
        time.sleep(0.05)


def test_health_models_and_page(tmp_path):
    with _client(FakeWorldModel(), tmp_path) as client:
        assert client.get("/healthz").json() == {"status": "ok", "live_sessions": 0, "max_sessions": 2, "jobs_queued": 0}
        assert client.get("/v1/models").json() == {"data": [{"id": "fake", "size": [32, 48], "fps": 16.0, "text": False}]}
        page = client.get("/")
        assert page.status_code == 200 and "<canvas" in page.text and "/static/app.js" in page.text
        assert client.get("/static/app.js").status_code == 200
        assert client.get("/example.png").headers["content-type"] == "image/png"
        assert client.get("/static/../jobs.py").status_code == 404


def test_video_job_runs_and_its_results_download(tmp_path, tmp_path_factory):
    model = FakeWorldModel()
    with _client(model, tmp_path) as client:
        reply = client.post("/v1/videos", json={"action": "w-8,l-8", "seed": 3})
        assert reply.status_code == 202 and reply.json()["status"] == "queued"
        job = _wait_for_job(client, reply.json()["id"])
        assert job["status"] == "done" and job["frames_done"] == 17, job
        video = client.get(job["video_url"])
        camera = client.get(job["camera_url"])
    out = tmp_path_factory.mktemp("dl")
    (out / "v.mp4").write_bytes(video.content)
    (out / "v.camera.npz").write_bytes(camera.content)
    frames, fps = read_video(out / "v.mp4")
    assert frames.shape == (17, 32, 48, 3) and fps == 16
    traj = load_trajectory(out / "v.camera.npz")
    np.testing.assert_allclose(traj.c2w.numpy(), action_to_c2w("w-8,l-8").numpy(), atol=1e-6)
    assert model.stream_calls[0]["seed"] == 3


def test_trajectory_job_takes_poses_as_data(tmp_path):
    c2w = action_to_c2w("d-12").numpy()
    with _client(FakeWorldModel(), tmp_path) as client:
        reply = client.post("/v1/videos", json={"trajectory": {"c2w": c2w.tolist()}, "frames": 9})
        job = _wait_for_job(client, reply.json()["id"])
        assert job["status"] == "done" and job["frames_done"] == 9


@pytest.mark.parametrize(
    "body, status, expected",
    [
        ({"action": "w-8", "trajectory": {"c2w": []}}, 400, "exactly one"),
        ({"action": "q-8"}, 400, "unknown key"),
        ({"action": "w-5000"}, 400, "at most 2000 frames"),
        ({"trajectory": "/etc/passwd"}, 400, "must be an object"),
        ({"trajectory": {"c2w": [[1, 2]]}}, 400, "trajectory"),
        ({"action": "w-8", "steps": 0}, 400, "steps"),
        ({"action": "w-8", "output": "/tmp/x.mp4"}, 400, "unknown field"),
        ({"action": "w-8", "image": "not base64!"}, 400, "base64"),
    ],
)
def test_bad_job_requests_are_refused(tmp_path, body, status, expected):
    with _client(FakeWorldModel(), tmp_path) as client:
        reply = client.post("/v1/videos", json=body)
    assert reply.status_code == status and expected in reply.json()["error"], reply.json()


def test_body_limits_and_type(tmp_path):
    with _client(FakeWorldModel(), tmp_path, max_request_bytes=1000) as client:
        assert client.post("/v1/videos", content=b"{}", headers={"content-type": "text/plain"}).status_code == 415
        assert client.post("/v1/videos", json={"action": "w-8", "prompt": "x" * 2000}).status_code == 413
        assert client.post("/v1/videos", content=b"{nope", headers={"content-type": "application/json"}).status_code == 400
        for bad_id in ("../../etc/passwd", "0" * 31, "g" * 32):
            assert client.get(f"/v1/videos/{bad_id}").status_code == 404
        assert client.get("/v1/videos/" + "0" * 32 + "/content").status_code == 404


def test_job_queue_is_bounded(tmp_path):
    model = FakeWorldModel(chunk_delay_s=0.2)
    with _client(model, tmp_path, max_queued_jobs=2) as client:
        codes = [client.post("/v1/videos", json={"action": "w-40"}).status_code for _ in range(5)]
    assert codes[:2] == [202, 202] and 429 in codes


def test_accepted_and_finished_jobs_survive_a_restart(tmp_path):
    data = tmp_path / "data"
    model = FakeWorldModel()
    with _client(model, tmp_path) as client:
        done_id = client.post("/v1/videos", json={"action": "w-8"}).json()["id"]
        assert _wait_for_job(client, done_id)["status"] == "done"
        video_before = client.get(f"/v1/videos/{done_id}/content").content
    # A job accepted (and one cut off while running) just before the server stopped.
    store = JobStore(data)
    queued_id = store.add("video", {"action": "s-8", "trajectory": None, "frames": 9, "steps": None, "seed": 0,
                                    "prompt": None}, None)  # fmt: skip
    cut_id = store.add("video", {"action": "a-8", "trajectory": None, "frames": 9, "steps": None, "seed": 0,
                                 "prompt": None}, None, status="running")  # fmt: skip
    store.close()
    with _client(model, tmp_path) as client:
        assert client.get(f"/v1/videos/{done_id}/content").content == video_before
        for job_id in (queued_id, cut_id):
            assert _wait_for_job(client, job_id)["status"] == "done"
    assert (data / "jobs.sqlite").is_file()
    assert not list((data / "results").glob(".part-*"))


def test_recording_makes_mp4_and_camera_file(tmp_path, tmp_path_factory):
    frames, c2w = [], action_to_c2w("l-5").numpy()
    for k in range(6):
        out = io.BytesIO()
        Image.new("RGB", (48, 32), (40 * k, 100, 200)).save(out, format="JPEG", quality=95)
        frames.append(base64.b64encode(out.getvalue()).decode())
    body = {"fps": 16, "frames": frames, "c2w": c2w.reshape(6, 16).tolist()}
    with _client(FakeWorldModel(), tmp_path) as client:
        reply = client.post("/v1/recordings", json=body)
        assert reply.status_code == 201, reply.json()
        doc = reply.json()
        assert doc["kind"] == "recording" and doc["status"] == "done"
        video, camera = client.get(doc["video_url"]).content, client.get(doc["camera_url"]).content
        bad = client.post("/v1/recordings", json={**body, "c2w": body["c2w"][:3]})
        assert bad.status_code == 400 and "one c2w per frame" in bad.json()["error"]
    out = tmp_path_factory.mktemp("rec")
    (out / "r.mp4").write_bytes(video)
    (out / "r.camera.npz").write_bytes(camera)
    decoded, _ = read_video(out / "r.mp4")
    assert decoded.shape == (6, 32, 48, 3)
    assert abs(int(decoded[5, 10, 10, 0]) - 200) < 12  # the colour of the last frame came through
    traj = load_trajectory(out / "r.camera.npz")
    np.testing.assert_allclose(traj.c2w.numpy(), c2w, atol=1e-6)
    assert traj.image_size == (32, 48)


def test_token_guards_v1_but_not_the_page(tmp_path):
    with _client(FakeWorldModel(), tmp_path, token="s3cret-token") as client:
        assert client.get("/").status_code == 200
        assert client.get("/healthz").status_code == 200
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200


def test_cross_origin_posts_and_foreign_hosts_are_refused(tmp_path):
    with _client(FakeWorldModel(), tmp_path) as client:
        reply = client.post("/v1/videos", json={"action": "w-8"}, headers={"Origin": "http://evil.example"})
        assert reply.status_code == 403
        assert client.get("/healthz", headers={"Host": "rebound.example"}).status_code == 403
        same = client.post("/v1/videos", json={"action": "w-8"}, headers={"Origin": BASE})
        assert same.status_code == 202
