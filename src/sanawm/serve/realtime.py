"""One live session of /v1/realtime: the model on a worker thread, frames out, controls in.

    client ──init──▶ receiver ──▶ producer thread: model.stream(...) chunk by chunk
                        │ controls (latest wins)        │ encoded frames
                        ▼                               ▼
                    ControlSlot ◀── read at each     bounded queue ──▶ sender ──▶ client
                                    chunk boundary

- Controls coalesce: the producer reads the newest action/camera event just before it asks
  the model for the next chunk (the API applies it from there), so a burst of key repeats
  costs nothing.
- Frames never pile up: the queue holds `frame_queue` frames; when a client reads slowly the
  producer waits (outside the model's turn, so other sessions go on).
- Ends on the client's close or disconnect, the end of a finite video, the idle timeout (no
  message from the client) or the lifetime cap; the model session is always closed and the
  thread joined before the session's slot is freed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from dataclasses import dataclass

from starlette.websockets import WebSocket, WebSocketDisconnect

from sanawm.errors import UserInputError
from sanawm.serve import protocol
from sanawm.serve.config import ServeConfig
from sanawm.serve.images import encode_frame
from sanawm.serve.scheduling import ModelTurns

log = logging.getLogger("sanawm.serve")

PUT_POLL_S = 0.2  # how often a producer waiting on a full queue checks for the stop signal


class ControlSlot:
    """The newest control not yet handed to the model (an ActionEvent or CameraEvent)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._control = None

    def put(self, control) -> None:
        with self._lock:
            self._control = control

    def take(self):
        with self._lock:
            control, self._control = self._control, None
            return control


@dataclass
class _Ready:
    fps: float
    size: tuple[int, int]


@dataclass
class _Frame:
    header: str
    image: bytes


@dataclass
class _Error:
    message: str


class _End:
    pass


class LiveSession:
    """Runs one accepted WebSocket until it ends; `run()` returns once everything is freed."""

    def __init__(self, ws: WebSocket, model, model_name: str, turns: ModelTurns, config: ServeConfig) -> None:
        self.ws = ws
        self.model = model
        self.model_name = model_name
        self.turns = turns
        self.config = config
        self.controls = ControlSlot()
        self.stop = threading.Event()
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=config.frame_queue)
        self.send_lock = asyncio.Lock()
        self.started = time.monotonic()
        self.last_message = self.started

    # ---- event-loop side -----------------------------------------------------------------

    async def run(self) -> None:
        try:
            init = await self._wait_for_init()
        except WebSocketDisconnect:
            return
        except _Expired as expired:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self._send_text(protocol.error(str(expired)))
                await self._send_text(protocol.end())
                await self.ws.close()
            return
        if init is None:
            return
        loop = asyncio.get_running_loop()
        producer = threading.Thread(target=self._produce, args=(init, loop), name="sanawm-live", daemon=True)
        producer.start()
        sender = asyncio.create_task(self._send_frames())
        receiver = asyncio.create_task(self._receive_controls())
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.stop.set()
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)
            await asyncio.to_thread(producer.join)
        await self._finish(sender, receiver)

    async def _finish(self, sender: asyncio.Task, receiver: asyncio.Task) -> None:
        """Tell a client that is still there why the session ended, then close."""
        outcomes = [_outcome(task) for task in (sender, receiver)]
        if any(isinstance(o, (WebSocketDisconnect, OSError)) for o in outcomes):
            return  # the client is gone
        for unexpected in (o for o in outcomes if isinstance(o, Exception) and not isinstance(o, _Expired)):
            log.error("live session task failed", exc_info=unexpected)
        try:
            for expired in (o for o in outcomes if isinstance(o, _Expired)):
                await self._send_text(protocol.error(str(expired)))
            await self._send_text(protocol.end())
            await self.ws.close()
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client left meanwhile

    async def _wait_for_init(self) -> protocol.Init | None:
        while True:
            message = await self._next_message()
            if isinstance(message, protocol.Init):
                return message
            if isinstance(message, protocol.Close):
                await self._send_text(protocol.end())
                await self.ws.close()
                return None
            if not isinstance(message, protocol.Heartbeat):
                await self._send_text(protocol.error("send an init message first"))

    async def _receive_controls(self) -> None:
        """Returns on a close message; raises WebSocketDisconnect or _Expired."""
        while True:
            message = await self._next_message()
            if isinstance(message, protocol.Close):
                return
            if isinstance(message, protocol.Init):
                await self._send_text(protocol.error("the session is already initialised"))
            elif isinstance(message, (protocol.ActionEvent, protocol.CameraEvent)):
                self.controls.put(message)

    async def _next_message(self):
        """The next valid client message; bad ones are answered with an error and skipped.
        Raises WebSocketDisconnect when the client leaves, _Expired on the idle or lifetime limit."""
        while True:
            now = time.monotonic()
            idle_left = self.last_message + self.config.idle_timeout_s - now
            life_left = self.started + self.config.lifetime_s - now
            if life_left <= 0:
                raise _Expired(f"session lifetime of {self.config.lifetime_s:g} s reached")
            if idle_left <= 0:
                raise _Expired(f"idle timeout: no message for {self.config.idle_timeout_s:g} s")
            try:
                raw = await asyncio.wait_for(self.ws.receive(), timeout=min(idle_left, life_left))
            except asyncio.TimeoutError:
                continue
            if raw["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(raw.get("code", 1000))
            self.last_message = time.monotonic()
            text = raw.get("text")
            if text is None:
                await self._send_text(protocol.error("binary messages are not accepted; send JSON text"))
                continue
            try:
                if len(text) > self.config.max_event_bytes:  # an init with an image: decoded off the event loop
                    return await asyncio.to_thread(protocol.parse_client_message, text, self.config)
                return protocol.parse_client_message(text, self.config)
            except protocol.ProtocolError as err:
                await self._send_text(protocol.error(str(err)))

    async def _send_frames(self) -> None:
        """Drains the queue to the client; returns at the end of the video (the caller says "end")."""
        while True:
            item = await self.queue.get()
            if isinstance(item, _Ready):
                await self._send_text(protocol.ready(self.model_name, item.fps, item.size))
            elif isinstance(item, _Frame):
                async with self.send_lock:  # header and image stay adjacent
                    await self.ws.send_text(item.header)
                    await self.ws.send_bytes(item.image)
            elif isinstance(item, _Error):
                await self._send_text(protocol.error(item.message))
            else:
                return

    async def _send_text(self, text: str) -> None:
        async with self.send_lock:
            await self.ws.send_text(text)

    # ---- producer thread -----------------------------------------------------------------

    def _produce(self, init: protocol.Init, loop: asyncio.AbstractEventLoop) -> None:
        session = None
        try:
            with self.turns.turn():
                session = self.model.stream(
                    init.image, action=init.action, frames=init.num_frames, prompt=init.prompt,
                    seed=init.seed, steps=init.steps,
                )  # fmt: skip
            if not self._put(loop, _Ready(float(session.fps), tuple(session.image_size))):
                return
            chunks = iter(session)
            while not self.stop.is_set():
                self._apply_control(session, loop)
                with self.turns.turn():
                    if self.stop.is_set():
                        return
                    chunk = next(chunks, None)
                if chunk is None:
                    break
                for k, frame in enumerate(chunk.frames):
                    item = _Frame(protocol.frame_header(chunk.start + k, chunk.c2w[k]), encode_frame(frame, init.format))
                    if not self._put(loop, item):
                        return
            self._put(loop, _End())
        except UserInputError as err:
            self._put(loop, _Error(str(err)))
            self._put(loop, _End())
        except Exception:
            log.exception("live session failed")
            self._put(loop, _Error("internal error in the model; the session ends"))
            self._put(loop, _End())
        finally:
            if session is not None:
                session.close()

    def _apply_control(self, session, loop: asyncio.AbstractEventLoop) -> None:
        control = self.controls.take()
        try:
            if isinstance(control, protocol.ActionEvent):
                session.push_action(control.action)
            elif isinstance(control, protocol.CameraEvent):
                session.push_poses(control.poses)
        except UserInputError as err:
            self._put(loop, _Error(str(err)))

    def _put(self, loop: asyncio.AbstractEventLoop, item) -> bool:
        """Queue an item, waiting while the queue is full; False once the session is stopping."""
        if self.stop.is_set():
            return False
        try:
            future = asyncio.run_coroutine_threadsafe(self.queue.put(item), loop)
        except RuntimeError:  # the event loop is gone (server shutting down)
            return False
        while True:
            try:
                future.result(timeout=PUT_POLL_S)
                return True
            except concurrent.futures.TimeoutError:
                if self.stop.is_set():
                    future.cancel()
                    return False


def _outcome(task: asyncio.Task):
    """None if the task was cancelled, its exception if it raised, else "done"."""
    if task.cancelled():
        return None
    return task.exception() or "done"


class _Expired(Exception):
    """The idle timeout or the lifetime cap ended the session."""
