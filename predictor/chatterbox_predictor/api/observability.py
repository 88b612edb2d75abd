"""Request ids and JSON logs: every line a request causes carries its id, streaming included.

Metrics live beside this module (`metrics`); both sit under the routes and know nothing of them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdMiddleware:
    """Gives every HTTP request and WebSocket an id (the client's X-Request-ID, or a new one), visible
    to the logs for the whole life of the request, streaming included, and echoed in the response.
    Plain ASGI rather than `@app.middleware("http")`, which would sit between a streaming response
    and the client's disconnect."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = re.sub(r"[^A-Za-z0-9._-]", "", given)[:64] or uuid.uuid4().hex
        token = request_id.set(rid)

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, with the request id of the request being served."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage(), "request_id": request_id.get()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def json_logs(logger_name: str = "chatterbox_predictor") -> None:
    """Our loggers write one JSON object per line, with the request id (KServe keeps its own format)."""
    log = logging.getLogger(logger_name)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
