"""ASGI middleware: one access-log line and the request metrics per request, bearer-token auth, body size limit.

    KILN_API_TOKEN=s3cret kiln serve   # then: curl -H 'Authorization: Bearer s3cret' 127.0.0.1:8080/v1/models

Pure ASGI classes rather than `BaseHTTPMiddleware`, which costs a task and a stream copy per request.
Refusals made here (401, 413) are sent directly as the same JSON error body the routes use.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import time
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import PayloadTooLarge, ServingError, Unauthorized
from serving.metrics import Metrics

access_log = logging.getLogger("kiln.serving.access")

# Health, metrics, docs and the (HMAC-signed) webhook stay reachable without the token.
OPEN_PATHS = frozenset(
    {"/ping", "/health", "/v2/health/live", "/v2/health/ready", "/metrics", "/docs", "/openapi.json", "/redoc"}
    | {"/docs/oauth2-redirect", "/v1/webhooks/mlflow", "/"}  # "/" is the try-it page; it asks for the token
)
OPEN_PATTERN = re.compile(r"^(/v2/models/[^/]+(/versions/[^/]+)?/ready|/static/[\w./-]+)$")


async def send_error(send: Send, error: ServingError) -> None:
    body = json.dumps(error.to_json()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AccessMiddleware:
    """Times the request, records `kiln_requests_total` and friends, writes one JSON log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics, enabled: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = _header(scope, b"x-request-id") or os.urandom(8).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        response: dict[str, int] = {"status": 500, "bytes": 0}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                response["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._record(scope, response, time.perf_counter() - start, request_id)

    def _record(self, scope: Scope, response: dict[str, int], seconds: float, request_id: str) -> None:
        state = scope.get("state", {})
        model, version = state.get("model", ""), state.get("version", "")
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        self.metrics.observe_request(model, version, endpoint, response["status"], seconds)
        if not self.enabled or not access_log.isEnabledFor(logging.INFO):
            return
        client = scope.get("client")
        access_log.info(
            {
                "event": "request",
                "request_id": request_id,
                "method": scope["method"],
                "path": scope["path"],
                "endpoint": endpoint,
                "status": response["status"],
                "ms": round(seconds * 1000, 3),
                "model": model or None,
                "version": version or None,
                "bytes_in": int(_header(scope, b"content-length") or 0),
                "bytes_out": response["bytes"],
                "client": f"{client[0]}:{client[1]}" if client else None,
            }
        )


class AuthMiddleware:
    """`Authorization: Bearer <KILN_API_TOKEN>` on every path but the open ones."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"authorization")
        if header is None:
            await send_error(send, Unauthorized("missing bearer token: send Authorization: Bearer <token>"))
            return
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token):
            await send_error(send, Unauthorized("invalid bearer token"))
            return
        await self.app(scope, receive, send)


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or OPEN_PATTERN.match(path) is not None


class BodyLimitMiddleware:
    """413 for a declared Content-Length over the limit before reading; counts chunked bodies as they come."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_error(send, self._too_large(int(declared)))
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large(received)
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self, size: int) -> PayloadTooLarge:
        return PayloadTooLarge(f"the body is {size} bytes or more; the limit is {self.max_bytes} (KILN_MAX_BODY_BYTES)")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a dict message is merged into it, anything else becomes `msg`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if isinstance(record.msg, dict):
            entry.update(record.msg)
        else:
            entry["msg"] = record.getMessage()
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "info") -> None:
    """JSON lines on stderr for kiln's loggers and uvicorn's error log; uvicorn's own access log stays off."""
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("kiln", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
