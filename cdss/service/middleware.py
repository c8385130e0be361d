"""The ASGI layers around the app: a 1 MiB body limit (413 before any parsing) and the access log.

The access log is also the last guard: an unexpected exception becomes a JSON 500 there and is
logged by its type only, so no traceback (whose message could quote request data) reaches a log.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

log = logging.getLogger("cdss.service")
access_log = logging.getLogger("cdss.service.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

def _json_error(status: int, code: str, message: str) -> tuple[Message, Message]:
    body = json.dumps({"error": code, "message": message}).encode()
    return ({"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]},
            {"type": "http.response.body", "body": body})


class BodyLimit:
    """413 for a request body over `limit` bytes, by Content-Length or by counting, before any parsing."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    await self._refuse(receive, send, more=True)
                    return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(receive, send, more=message.get("more_body", False))
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, receive: Receive, send: Send, *, more: bool) -> None:
        """Answer 413, after reading and discarding what the client is still sending (up to 16 times
        the limit): a client that is still writing its body then reads the answer, not a reset."""
        drained = 0
        while more and drained <= 16 * self.limit:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            drained += len(message.get("body", b""))
            more = message.get("more_body", False)
        start, body = _json_error(413, "too-large", f"request body over {self.limit // 1024} KiB; a CDS Hooks request "
                                  "with one patient document is far smaller")
        await send(start)
        await send(body)


class AccessLog:
    """One line per request: hookInstance, service, status, latency. Never a path, a body or a header.

    Also the last guard: an unexpected exception becomes a JSON 500 here and is logged by type only, so
    neither Starlette nor uvicorn prints a traceback whose message could quote request data."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        scope.setdefault("state", {})

        started_response = False

        async def sending(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as error:  # noqa: BLE001 - answered here so no traceback (it may quote request data) is logged
            log.error("internal error: %s (no details logged: they may hold request data)", type(error).__name__)
            if not started_response:
                start, body = _json_error(500, "internal-error", "internal error in cdss; nothing was evaluated. "
                                          "This is a bug: please report it.")
                await sending(start)
                await send(body)
        finally:
            state = scope.get("state", {})
            access_log.info("hookInstance=%s service=%s status=%d latency_ms=%.2f", state.get("hook_instance", "-"),
                            state.get("service", "-"), status, (time.perf_counter() - started) * 1000)
