"""Who may talk to the server: host, origin and token checks in front of every route.

- Host: a server bound to loopback answers only requests addressed to a loopback name, so a
  web page cannot reach it through DNS rebinding (a hostile name that resolves to 127.0.0.1).
- Origin: a browser sends Origin with WebSocket handshakes and POSTs; one from another site
  is refused, so a page on the web cannot drive a local model (WebSockets ignore CORS).
- Token: with `--token T`, every /v1 route needs `Authorization: Bearer T`; WebSocket clients
  in browsers, which cannot set headers, offer the subprotocol `bearer.T` instead.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from sanawm.serve.config import LOOPBACK_HOSTS

TOKEN_PROTOCOL_PREFIX = "bearer."
TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-"


def offered_protocols(headers: Headers) -> list[str]:
    return [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]


def _host_name(host: str) -> str:
    """'127.0.0.1:8000' -> '127.0.0.1', '[::1]:8000' -> '::1'."""
    return urlsplit("//" + host).hostname or ""


class Guard:
    """ASGI middleware applying the three checks; `loopback_only` when bound to loopback."""

    def __init__(self, app: ASGIApp, token: str | None, loopback_only: bool) -> None:
        self.app = app
        self.token = token
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        problem = self._problem(scope, headers)
        if problem is None:
            return await self.app(scope, receive, send)
        status, message = problem
        if scope["type"] == "websocket":
            # Refused before the handshake completes: the client sees HTTP 403.
            await send({"type": "websocket.close", "code": 1008, "reason": message})
            return
        await JSONResponse({"error": message}, status_code=status)(scope, receive, send)

    def _problem(self, scope: Scope, headers: Headers) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if self.loopback_only and _host_name(host) not in LOOPBACK_HOSTS:
            return 403, "this server answers only on loopback addresses"
        origin = headers.get("origin")
        unsafe = scope["type"] == "websocket" or scope.get("method") not in ("GET", "HEAD")
        if unsafe and origin is not None and urlsplit(origin).netloc != host:
            return 403, "cross-origin requests are not allowed"
        if self.token is not None and scope["path"].startswith("/v1/") and not self._has_token(headers):
            return 401, "missing or wrong token (Authorization: Bearer TOKEN)"
        return None

    def _has_token(self, headers: Headers) -> bool:
        offered = [p[len(TOKEN_PROTOCOL_PREFIX):] for p in offered_protocols(headers) if p.startswith(TOKEN_PROTOCOL_PREFIX)]
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer "):
            offered.append(auth[len("Bearer "):])
        return any(hmac.compare_digest(t.encode(), self.token.encode()) for t in offered)
