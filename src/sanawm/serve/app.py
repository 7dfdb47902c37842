"""The ASGI application of `sanawm serve` (`create_app`).

Routes: GET / (the page), /static/*, /example.png, GET /healthz, GET /v1/models,
POST /v1/videos + GET /v1/videos/<id>[/content|/camera] (offline jobs), POST /v1/recordings
(frames the page recorded -> MP4 + camera file), WebSocket /v1/realtime (live sessions, see
`sanawm.serve.protocol`).
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from sanawm.errors import UserInputError
from sanawm.serve import protocol
from sanawm.serve.config import ServeConfig
from sanawm.serve.guard import Guard, offered_protocols
from sanawm.serve.jobs import DONE, QUEUED, JobStore
from sanawm.serve.offline import JobRunner, check_video_request, write_recording
from sanawm.serve.realtime import LiveSession
from sanawm.serve.scheduling import ModelTurns

PAGE_PROTOCOL = "sanawm.v1"  # the page offers it (with bearer.T) and we echo it back
STATIC_DIR = Path(str(resources.files("sanawm.serve") / "static"))
EXAMPLE_IMAGE = Path(str(resources.files("sanawm") / "assets" / "example.png"))
_NO_STORE = {"Cache-Control": "no-store"}  # the page changes with the package; never serve a stale one


class LiveSlots:
    """How many live sessions run; the next one past `limit` is refused."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def try_take(self) -> bool:  # called on the event loop only
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def give_back(self) -> None:
        self.active -= 1


def create_app(model, model_name: str, config: ServeConfig, *, loopback_only: bool = True) -> Starlette:
    """The server around a loaded model (a `WorldModel`, or anything with its `stream`,
    `image_size` and `settings`)."""
    turns = ModelTurns()
    slots = LiveSlots(config.max_sessions)
    store = JobStore(config.data_dir)
    runner = JobRunner(store, model, turns, config)

    @asynccontextmanager
    async def lifespan(app):
        runner.start()
        try:
            yield
        finally:
            await asyncio.to_thread(runner.stop)
            store.close()

    async def page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=_NO_STORE)

    async def example(request: Request) -> Response:
        return FileResponse(EXAMPLE_IMAGE)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "live_sessions": slots.active, "max_sessions": slots.limit,
                             "jobs_queued": store.count(QUEUED)})  # fmt: skip

    async def models(request: Request) -> Response:
        height, width = model.image_size
        entry = {"id": model_name, "size": [height, width], "fps": float(model.settings.fps),
                 "text": getattr(model, "text_encoder", None) is not None}  # fmt: skip
        return JSONResponse({"data": [entry]})

    async def submit_video(request: Request) -> Response:
        doc = await _json_body(request, config.max_request_bytes)
        if isinstance(doc, Response):
            return doc
        try:
            params, image = check_video_request(doc, config, model)
        except UserInputError as err:
            return _error(400, str(err))
        if store.count(QUEUED) >= config.max_queued_jobs:
            return _error(429, f"the job queue is full ({config.max_queued_jobs} jobs); try again later")
        job_id = store.add("video", params, image)
        runner.wake.set()
        return JSONResponse(store.get(job_id).public(), status_code=202)

    async def job_status(request: Request) -> Response:
        job = store.get(request.path_params["job_id"])
        return _error(404, "no such job") if job is None else JSONResponse(job.public())

    def download(what: str, media_type: str):
        async def handler(request: Request) -> Response:
            job = store.get(request.path_params["job_id"])
            if job is None:
                return _error(404, "no such job")
            if job.status != DONE:
                return _error(409, f"the job is {job.status}")
            name = f"sanawm-{job.id[:8]}" + (".mp4" if what == "video" else ".camera.npz")
            return FileResponse(store.result_path(job.id, what), media_type=media_type, filename=name)

        return handler

    async def recording(request: Request) -> Response:
        doc = await _json_body(request, config.max_request_bytes)
        if isinstance(doc, Response):
            return doc
        try:
            job_id = await asyncio.to_thread(write_recording, store, doc, model, config)
        except UserInputError as err:
            return _error(400, str(err))
        return JSONResponse(store.get(job_id).public(), status_code=201)

    async def realtime(ws: WebSocket) -> None:
        subprotocol = PAGE_PROTOCOL if PAGE_PROTOCOL in offered_protocols(ws.headers) else None
        if not slots.try_take():
            await ws.accept(subprotocol)
            await ws.send_text(protocol.error(
                f"server busy: all {slots.limit} live sessions are in use; try again later"))  # fmt: skip
            await ws.close(code=1013)  # "try again later"
            return
        try:
            await ws.accept(subprotocol)
            await LiveSession(ws, model, model_name, turns, config).run()
        finally:
            slots.give_back()

    routes = [
        Route("/", page),
        Route("/example.png", example),
        Route("/healthz", healthz),
        Route("/v1/models", models),
        Route("/v1/videos", submit_video, methods=["POST"]),
        Route("/v1/videos/{job_id}", job_status),
        Route("/v1/videos/{job_id}/content", download("video", "video/mp4")),
        Route("/v1/videos/{job_id}/camera", download("camera", "application/octet-stream")),
        Route("/v1/recordings", recording, methods=["POST"]),
        WebSocketRoute("/v1/realtime", realtime),
        Mount("/static", StaticFiles(directory=STATIC_DIR)),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(Guard, token=config.token, loopback_only=loopback_only)])  # fmt: skip
    app.state.slots = slots
    app.state.store = store
    return app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json_body(request: Request, limit: int):
    """The parsed JSON body, or an error response (wrong type, too large, not JSON)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return _error(415, "send the body as application/json")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return _error(413, f"the body is larger than {limit} bytes")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            return _error(413, f"the body is larger than {limit} bytes")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return _error(400, "the body is not valid JSON")
