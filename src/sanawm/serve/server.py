"""Running the app under uvicorn on a socket we make ourselves.

The listening socket gets a fixed send buffer, which the connections it accepts inherit.
Without it Linux grows each connection's send buffer up to `tcp_wmem` max (4 MB by
default): a client that stops reading would leave seconds of stale frames queued in the
server's kernel. With it, what waits for a slow client is at most the session's frame queue,
uvicorn's 64 kB write buffer and this buffer, and the model waits for the client.
"""

from __future__ import annotations

import signal
import socket
import threading
from typing import Callable, TypeVar

import uvicorn

from sanawm.serve.config import ServeConfig

SEND_BUFFER_BYTES = 256 * 1024
T = TypeVar("T")


def listening_socket(host: str, port: int, send_buffer: int = SEND_BUFFER_BYTES) -> socket.socket:
    """A bound, listening TCP socket for `host:port` (port 0: any free port)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.bind(address)
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, remembering whether Ctrl-C stopped it. uvicorn re-raises the signal
    after its graceful shutdown, but under asyncio's runner that re-raise only cancels a task
    that may already have finished, so `run` can return normally after a Ctrl-C (seen on a
    loaded 2-core machine: exit 0 instead of 130)."""

    interrupted = False

    def handle_exit(self, sig, frame) -> None:
        if sig == signal.SIGINT:
            self.interrupted = True
        super().handle_exit(sig, frame)

    def run(self, sockets=None) -> None:
        super().run(sockets=sockets)
        if self.interrupted:
            raise KeyboardInterrupt


def uvicorn_server(app, config: ServeConfig) -> uvicorn.Server:
    """A uvicorn server for the app; run it with `server.run(sockets=[listening_socket(...)])`,
    which raises KeyboardInterrupt once it has shut down after a Ctrl-C.
    Messages larger than an init message are cut off by the WebSocket layer (close 1009)."""
    return _Server(
        uvicorn.Config(app, ws="websockets-sansio", ws_max_size=config.max_init_bytes + 1024, log_level="warning",
                       lifespan="on")  # fmt: skip
    )


def load_off_main_thread(load: Callable[[], T]) -> T:
    """`load()` in a short-lived thread, its result or its exception handed back.

    The model runs in per-session producer threads. Any parallel torch work on the main thread
    (loading the weights is some) leaves the main thread its own OpenMP team for good, and GNU
    OpenMP, seeing more of its threads than CPUs, then stops its workers from spinning between
    parallel regions: on 2 cores every session chunk took ~1.7x as long. A thread's team goes
    away with the thread.
    """
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = load()
        except BaseException as err:  # re-raised on the calling thread
            box["error"] = err

    worker = threading.Thread(target=run, name="sanawm-load")
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]
