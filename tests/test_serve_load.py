"""Load on loopback: concurrent live sessions get every frame in order, memory stays flat,
frame latency is reported, and a client that reads slowly holds up nobody but itself.

The fake model makes a chunk in 20 ms, so these tests measure the server, not a model.
Every loop is bounded in time and count and the server runs on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time

import numpy as np

from _fake_world_model import FakeWorldModel
from _serve_fixtures import running_server

from sanawm.serve.config import ServeConfig
from websockets.asyncio.client import connect


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def _session(host: str, seconds: float, model: FakeWorldModel, read_delay_s: float = 0.0,
                   indices: list[int] | None = None, receive_buffer: int | None = None,
                   started: asyncio.Event | None = None) -> dict:
    """One client: init, heartbeat + an action now and then, read for `seconds`, close, read to
    the end. Returns the frame indices and per-frame latency (model done -> client got it)."""
    indices = [] if indices is None else indices
    latencies = []
    sock = None
    if receive_buffer:  # a fixed, small kernel buffer, as on a slow link (no autotuning)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        address, port = host.split(":")
        sock.connect((address, int(port)))
    async with connect(f"ws://{host}/v1/realtime", max_size=2**24, open_timeout=10, sock=sock) as ws:
        await ws.send(json.dumps({"type": "init", "format": "jpeg"}))
        ready = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ready["type"] == "ready", ready
        session = model.sessions[-1]  # sessions start one at a time (see _start)
        if started is not None:
            started.set()
        stop_at = time.monotonic() + seconds
        closing = False
        while True:
            if not closing and time.monotonic() > stop_at:
                await ws.send(json.dumps({"type": "close"}))
                closing = True
                read_before_close = len(indices)
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message["type"] == "end":
                break
            assert message["type"] == "frame", message
            image = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(image, bytes)
            now = time.monotonic()
            indices.append(message["index"])
            latencies.append(now - session.finished_at[message["index"]])
            if not closing and len(indices) % 40 == 0:
                await ws.send(json.dumps({"type": "event", "kind": "action", "payload": "wl-8"}))
                await ws.send(json.dumps({"type": "event", "kind": "heartbeat"}))
            if read_delay_s and not closing:
                await asyncio.sleep(read_delay_s)
    return {"indices": indices, "latencies": latencies, "session": session, "read_before_close": read_before_close}


async def _start(host, model, seconds, **kwargs) -> asyncio.Task:
    """A session task, returned once it is ready, so `model.sessions[-1]` is its session."""
    started = asyncio.Event()
    task = asyncio.create_task(_session(host, seconds, model, started=started, **kwargs))
    await asyncio.wait_for(started.wait(), 20)
    return task


async def _sessions(host, model, count, seconds):
    return await asyncio.gather(*[await _start(host, model, seconds) for _ in range(count)])


def test_concurrent_sessions_in_order_flat_memory_latency_reported(tmp_path):
    sessions, seconds = 4, 2.0
    model = FakeWorldModel(size=(128, 128), first_chunk=9, chunk=12, chunk_delay_s=0.02)
    config = ServeConfig(data_dir=tmp_path / "data", max_sessions=sessions)
    rss, results = [], []
    with running_server(model, config) as (host, app):
        for _ in range(3):  # round 1 warms up; rounds 2 and 3 must not grow
            results = asyncio.run(_sessions(host, model, sessions, seconds))
            deadline = time.monotonic() + 10
            while app.state.slots.active and time.monotonic() < deadline:
                time.sleep(0.02)
            assert app.state.slots.active == 0
            rss.append(_rss_mb())
            for r in results:
                assert r["indices"] == list(range(len(r["indices"]))), "frames out of order or missing"
                assert len(r["indices"]) > 50
                assert r["session"].closed
    latencies = np.concatenate([r["latencies"] for r in results]) * 1000
    p50, p95 = np.percentile(latencies, [50, 95])
    frames = sum(len(r["indices"]) for r in results)
    print(f"\nload: {sessions} sessions x {seconds:g} s, {frames} frames of 128x128, "
          f"frame latency p50 {p50:.1f} ms, p95 {p95:.1f} ms; RSS after rounds: "
          + ", ".join(f"{v:.1f}" for v in rss) + " MB")  # fmt: skip
    # A round moves ~800 frames of 48 kB raw pixels (~40 MB): a server that kept the frames
    # or the model sessions of a round would grow past the bound; measured growth is ~1 MB.
    assert rss[2] - rss[1] < 30, rss


def test_a_slow_client_does_not_stall_the_others(tmp_path):
    # Textured 128x128 frames (~20 kB as JPEG) fill the socket buffers of a slow reader soon.
    model = FakeWorldModel(size=(128, 128), first_chunk=9, chunk=12, chunk_delay_s=0.02, texture=True)
    config = ServeConfig(data_dir=tmp_path / "data", max_sessions=3, frame_queue=24)

    async def scenario(host):
        fast = [await _start(host, model, 4.0) for _ in range(2)]
        slow_read: list[int] = []
        slow = await _start(host, model, 4.0, read_delay_s=0.25, indices=slow_read, receive_buffer=64 * 1024)
        samples = []  # (frames the slow session's model made, frames the slow client read), every 0.25 s
        for _ in range(15):
            await asyncio.sleep(0.25)
            samples.append((len(model.sessions[2].finished_at), len(slow_read)))
        return await asyncio.gather(*fast), await slow, samples

    with running_server(model, config) as (host, _):
        fast, slow, samples = asyncio.run(scenario(host))
    # Over each second: how many more frames the slow session's model made than its client read.
    ahead = [(b[0] - a[0]) - (b[1] - a[1]) for a, b in zip(samples, samples[4:])]
    print(f"\nslow client read {slow['read_before_close']} frames in 4 s, its model made {samples[-1][0]}; "
          f"made minus read per second: {ahead}; fast clients read {fast[0]['read_before_close']} and "
          f"{fast[1]['read_before_close']}")  # fmt: skip
    for result in fast:
        assert result["indices"] == list(range(len(result["indices"])))
        assert result["read_before_close"] > 10 * slow["read_before_close"]
    assert slow["indices"] == list(range(len(slow["indices"])))
    # Once the buffers between model and slow client are full (about a second in), its model only
    # makes what the client takes away (a chunk of slack), instead of racing ahead like the fast
    # ones (~100 frames a second).
    assert min(ahead) <= model.chunk, ahead
