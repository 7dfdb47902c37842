"""/v1/realtime over a real loopback socket, with a fake model that follows the streaming API."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from _fake_world_model import FakeWorldModel
from _serve_fixtures import open_session, receive_frame, receive_json, running_server, wait_until

from sanawm.camera import action_to_c2w
from sanawm.serve.config import ServeConfig


def _config(tmp_path, **overrides) -> ServeConfig:
    return ServeConfig(data_dir=tmp_path / "data", **overrides)


def _png_base64(size=(40, 60), color=(200, 30, 30)) -> str:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def test_finite_session_sends_ready_frames_in_order_and_end(tmp_path):
    model = FakeWorldModel()
    with running_server(model, _config(tmp_path)) as (host, _):
        with open_session(host) as ws:
            ws.send(json.dumps({"type": "init", "action": "w-12", "num_frames": 13, "format": "jpeg", "steps": 3}))
            ready = receive_json(ws)
            assert ready == {"type": "ready", "model": "fake", "fps": 16.0, "size": [32, 48]}
            headers = []
            for _ in range(13):
                header, image = receive_frame(ws)
                headers.append(header)
                decoded = Image.open(io.BytesIO(image))
                assert decoded.format == "JPEG" and decoded.size == (48, 32)
            assert receive_json(ws) == {"type": "end"}
    assert [h["index"] for h in headers] == list(range(13))
    # The cameras are the action's poses (forward 0.05 per frame along +z), row-major.
    expected = action_to_c2w("w-12").double().numpy()
    got = np.array([h["c2w"] for h in headers]).reshape(13, 4, 4)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert model.stream_calls[0]["steps"] == 3 and model.stream_calls[0]["frames"] == 13
    assert model.sessions[0].closed


def test_uploaded_image_reaches_the_model_and_webp_frames(tmp_path):
    model = FakeWorldModel()
    with running_server(model, _config(tmp_path)) as (host, _):
        with open_session(host) as ws:
            ws.send(json.dumps({"type": "init", "image": "data:image/png;base64," + _png_base64(),
                                "num_frames": 5, "format": "webp"}))  # fmt: skip
            assert receive_json(ws)["type"] == "ready"
            _, image = receive_frame(ws)
            assert Image.open(io.BytesIO(image)).format == "WEBP"
    image = model.stream_calls[0]["image"]
    assert image.size == (40, 60) and image.getpixel((3, 3)) == (200, 30, 30)


def test_controls_apply_at_the_next_chunk_and_the_camera_holds_still_without_input(tmp_path):
    # Chunks of 5 then 4 frames; a 0.3 s chunk gives the client time to act between them.
    model = FakeWorldModel(first_chunk=5, chunk=4, chunk_delay_s=0.3)
    with running_server(model, _config(tmp_path)) as (host, _):
        with open_session(host) as ws:
            ws.send(json.dumps({"type": "init"}))
            assert receive_json(ws)["type"] == "ready"
            first = [receive_frame(ws)[0] for _ in range(5)]
            ws.send(json.dumps({"type": "event", "kind": "action", "payload": "d-2"}))  # coalesced away
            ws.send(json.dumps({"type": "event", "kind": "action", "payload": "d-4"}))  # newest wins
            rest = [receive_frame(ws)[0] for _ in range(24)]
            ws.send(json.dumps({"type": "close"}))
            while (message := receive_json(ws))["type"] != "end":
                if message["type"] == "frame":
                    ws.recv()
    poses = np.array([h["c2w"] for h in first + rest]).reshape(-1, 4, 4)
    x = poses[:, 0, 3]
    # No input: still. The control lands at a chunk boundary (frame 5, 9, 13, ... depending on
    # when it arrived), moves right 0.05 per frame for 4 frames, then holds still.
    start = int(np.argmax(np.abs(np.diff(x)) > 1e-9)) + 1
    assert start in (5, 9, 13, 17, 21), start
    np.testing.assert_allclose(x[:start], 0.0, atol=1e-12)
    np.testing.assert_allclose(x[start:start + 4], 0.05 * np.arange(1, 5), atol=1e-6)
    np.testing.assert_allclose(x[start + 4:], 0.2, atol=1e-6)


def test_camera_event_with_explicit_poses(tmp_path):
    model = FakeWorldModel(first_chunk=1, chunk=2, chunk_delay_s=0.2)
    rel = np.eye(4)
    rel[1, 3] = -0.5  # half a metre up (OpenCV: -y is up)
    with running_server(model, _config(tmp_path)) as (host, _):
        with open_session(host) as ws:
            ws.send(json.dumps({"type": "init", "num_frames": 7}))
            assert receive_json(ws)["type"] == "ready"
            headers = [receive_frame(ws)[0]]
            ws.send(json.dumps({"type": "event", "kind": "camera", "payload": [rel.ravel().tolist()] * 2}))
            while (message := receive_json(ws))["type"] != "end":
                headers.append(message)
                ws.recv()
    # Both poses are relative to the camera when the event is applied (a chunk boundary after
    # frame 0): the camera steps up once and stays there.
    y = np.array([h["c2w"][7] for h in headers])
    moved = int(np.argmax(y != 0.0))
    assert len(y) == 7 and moved in (1, 3, 5)
    np.testing.assert_allclose(y[moved:], -0.5, atol=1e-12)
    np.testing.assert_allclose(y[:moved], 0.0, atol=1e-12)


@pytest.mark.parametrize(
    "message, expected",
    [
        ("not json", "not valid JSON"),
        ('["init"]', "JSON object"),
        ('{"type": "dance"}', "unknown message type"),
        ('{"type": "event", "kind": "action", "payload": "x-8"}', "unknown key"),
        ('{"type": "event", "kind": "action", "payload": "w-100000"}', "more than the limit"),
        ('{"type": "event", "kind": "camera", "payload": [[1, 2, 3]]}', "16 numbers or 4x4"),
        ('{"type": "event", "kind": "camera", "payload": [[2,0,0,0, 0,1,0,0, 0,0,1,0, 0,0,0,1]]}', "rotation"),
        ('{"type": "event", "kind": "jump"}', "unknown kind"),
        ('{"type": "init"}', "already initialised"),
        ('{"type": "event", "kind": "heartbeat", "payload": "' + "x" * 300_000 + '"}', "larger than the limit"),
    ],
)
def test_bad_messages_get_an_error_and_the_session_goes_on(tmp_path, message, expected):
    model = FakeWorldModel(chunk_delay_s=0.05)
    with running_server(model, _config(tmp_path)) as (host, _):
        with open_session(host) as ws:
            ws.send(json.dumps({"type": "init"}))
            assert receive_json(ws)["type"] == "ready"
            receive_frame(ws)
            ws.send(message)
            ws.send(b"\x00binary")
            errors = []
            frames_after = 0
            while len(errors) < 2 or frames_after < 10:
                reply = receive_json(ws)
                if reply["type"] == "error":
                    errors.append(reply["message"])
                else:
                    assert reply["type"] == "frame"
                    ws.recv()
                    frames_after += len(errors) == 2
            assert expected in errors[0]
            assert "binary" in errors[1]


@pytest.mark.parametrize(
    "init, expected",
    [
        ({"type": "init", "format": "gif"}, "format must be one of"),
        ({"type": "init", "steps": 0}, "steps must be"),
        ({"type": "init", "num_frames": -3}, "num_frames must be"),
        ({"type": "init", "size": [704, 1280]}, "unknown field"),
        ({"type": "init", "image": "@@@"}, "not valid base64"),
        ({"type": "init", "image": base64.b64encode(b"GIF89a" + b"\0" * 50).decode()}, "not a readable"),
        ({"type": "init", "action": "w-"}, "frame count"),
    ],
)
def test_bad_init_is_answered_and_a_good_init_still_works(tmp_path, init, expected):
    with running_server(FakeWorldModel(), _config(tmp_path)) as (host, _):
        with open_session(host) as ws:
            ws.send(json.dumps({"type": "event", "kind": "action", "payload": "w-8"}))
            assert "init message first" in receive_json(ws)["message"]
            ws.send(json.dumps(init))
            reply = receive_json(ws)
            assert reply["type"] == "error" and expected in reply["message"], reply
            ws.send(json.dumps({"type": "init", "num_frames": 5}))
            assert receive_json(ws)["type"] == "ready"


def test_image_limits_pixels_and_bytes(tmp_path):
    # A PNG that claims 5000x5000 pixels compresses to a few kB: refused from its header.
    big = io.BytesIO()
    Image.new("L", (5000, 5000)).save(big, format="PNG")
    assert big.tell() < 100_000
    config = _config(tmp_path, max_image_pixels=1000 * 1000, max_image_bytes=200_000)
    with running_server(FakeWorldModel(), config) as (host, _):
        with open_session(host) as ws:
            ws.send(json.dumps({"type": "init", "image": base64.b64encode(big.getvalue()).decode()}))
            assert "more than the limit of 1000000" in receive_json(ws)["message"]
            ws.send(json.dumps({"type": "init", "image": base64.b64encode(b"\xff" * 210_000).decode()}))
            assert "larger than 200000 bytes" in receive_json(ws)["message"]


def test_sessions_are_bounded_and_the_next_client_is_refused_clearly(tmp_path):
    model = FakeWorldModel(chunk_delay_s=0.05)
    with running_server(model, _config(tmp_path, max_sessions=2)) as (host, app):
        with open_session(host) as a, open_session(host) as b:
            for ws in (a, b):
                ws.send(json.dumps({"type": "init"}))
                assert receive_json(ws)["type"] == "ready"
            with open_session(host) as c:
                refusal = receive_json(c)
                assert refusal["type"] == "error" and "server busy" in refusal["message"]
                with pytest.raises(Exception) as closed:
                    c.recv(timeout=5)
                assert "1013" in str(closed.value)
            assert app.state.slots.active == 2
        wait_until(lambda: app.state.slots.active == 0, what="slots freed")
        with open_session(host) as d:  # a slot is free again
            d.send(json.dumps({"type": "init", "num_frames": 5}))
            assert receive_json(d)["type"] == "ready"
    assert all(s.closed for s in model.sessions)


def test_idle_timeout_and_lifetime_end_the_session(tmp_path):
    model = FakeWorldModel(chunk_delay_s=0.05)
    with running_server(model, _config(tmp_path, idle_timeout_s=0.6, lifetime_s=60)) as (host, app):
        with open_session(host) as ws:
            ws.send(json.dumps({"type": "init"}))
            messages = []
            while not messages or messages[-1]["type"] != "end":
                message = receive_json(ws)
                if message["type"] == "frame":
                    ws.recv()
                messages.append(message)
            errors = [m["message"] for m in messages if m["type"] == "error"]
            assert errors == ["idle timeout: no message for 0.6 s"]
        wait_until(lambda: app.state.slots.active == 0, what="slot freed")
        with open_session(host) as ws:  # idle before init
            assert receive_json(ws) == {"type": "error", "message": "idle timeout: no message for 0.6 s"}
            assert receive_json(ws) == {"type": "end"}
    with running_server(model, _config(tmp_path, idle_timeout_s=60, lifetime_s=0.8)) as (host, _):
        with open_session(host) as ws:
            ws.send(json.dumps({"type": "init"}))
            errors = []
            while (message := receive_json(ws))["type"] != "end":
                if message["type"] == "frame":
                    ws.recv()
                    ws.send(json.dumps({"type": "event", "kind": "heartbeat"}))
                elif message["type"] == "error":
                    errors.append(message["message"])
            assert errors == ["session lifetime of 0.8 s reached"]
    assert all(s.closed for s in model.sessions)


def test_client_vanishing_mid_chunk_frees_the_session(tmp_path):
    model = FakeWorldModel(chunk_delay_s=0.5)
    with running_server(model, _config(tmp_path)) as (host, app):
        with open_session(host) as ws:
            ws.send(json.dumps({"type": "init"}))
            assert receive_json(ws)["type"] == "ready"
            model.chunk_started.clear()
            model.chunk_started.wait(timeout=10)  # the model is inside a chunk now
            ws.close_socket()  # gone without a close handshake
            started_at_close = model.sessions[0].chunks_started
        wait_until(lambda: app.state.slots.active == 0, what="slot freed")
        assert model.sessions[0].closed
        # It stopped after the chunk it was in (one more may start while the server notices).
        assert model.sessions[0].chunks_started <= started_at_close + 1


def test_token_is_required_when_set(tmp_path):
    from websockets.exceptions import InvalidStatus

    with running_server(FakeWorldModel(), _config(tmp_path, token="s3cret-token")) as (host, _):
        with pytest.raises(InvalidStatus) as refused:
            open_session(host)
        assert refused.value.response.status_code == 403
        with pytest.raises(InvalidStatus):
            open_session(host, subprotocols=["sanawm.v1", "bearer.wrong-token"])
        with open_session(host, subprotocols=["sanawm.v1", "bearer.s3cret-token"]) as ws:
            assert ws.subprotocol == "sanawm.v1"
            ws.send(json.dumps({"type": "init", "num_frames": 5}))
            assert receive_json(ws)["type"] == "ready"
        with open_session(host, additional_headers={"Authorization": "Bearer s3cret-token"}) as ws:
            ws.send(json.dumps({"type": "init", "num_frames": 5}))
            assert receive_json(ws)["type"] == "ready"


def test_cross_origin_and_foreign_host_handshakes_are_refused(tmp_path):
    from websockets.exceptions import InvalidStatus

    with running_server(FakeWorldModel(), _config(tmp_path)) as (host, _):
        with pytest.raises(InvalidStatus):
            open_session(host, origin="http://evil.example")
        with pytest.raises(InvalidStatus):
            open_session(host, additional_headers={"Host": "rebound.example:8000"})
        with open_session(host, origin=f"http://{host}") as ws:  # the page's own origin
            ws.send(json.dumps({"type": "init", "num_frames": 5}))
            assert receive_json(ws)["type"] == "ready"
