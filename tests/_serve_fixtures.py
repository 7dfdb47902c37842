"""Running `sanawm serve`'s app on a loopback port inside the test process, and a small
synchronous client for /v1/realtime. Tests only."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import pytest

pytest.importorskip("uvicorn")
from websockets.sync.client import connect  # noqa: E402

from sanawm.serve.app import create_app  # noqa: E402
from sanawm.serve.config import ServeConfig  # noqa: E402
from sanawm.serve.server import listening_socket, uvicorn_server  # noqa: E402


@contextlib.contextmanager
def running_server(model, config: ServeConfig, name: str = "fake"):
    """Serve on 127.0.0.1 at a free port; yields (base URL without scheme, app)."""
    app = create_app(model, name, config)
    server = uvicorn_server(app, config)
    sock = listening_socket("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        assert thread.is_alive(), "server thread died"
        time.sleep(0.02)
    port = sock.getsockname()[1]
    try:
        yield f"127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        assert not thread.is_alive(), "server did not stop"
        sock.close()


def open_session(host: str, **kwargs):
    return connect(f"ws://{host}/v1/realtime", max_size=2**24, open_timeout=10, **kwargs)


def receive_json(ws, timeout: float = 10.0) -> dict:
    message = ws.recv(timeout=timeout)
    assert isinstance(message, str), f"expected a JSON text message, got {len(message)} bytes"
    return json.loads(message)


def receive_frame(ws, timeout: float = 10.0) -> tuple[dict, bytes]:
    """The next frame header and its image; fails on anything else."""
    header = receive_json(ws, timeout)
    assert header["type"] == "frame", header
    image = ws.recv(timeout=timeout)
    assert isinstance(image, bytes)
    return header, image


def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
