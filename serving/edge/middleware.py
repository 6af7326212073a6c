"""ASGI middleware: one access-log line and the request metrics per request, the one place a 500 is made and
logged, bearer-token auth, and the request guards (header count and size, body size, body read timeout).

    KILN_API_TOKEN=s3cret kiln serve   # then: curl -H 'Authorization: Bearer s3cret' 127.0.0.1:8080/v1/models

Pure ASGI classes rather than `BaseHTTPMiddleware`, which costs a task and a stream copy per request.
Refusals made here (401, 408, 413, 431) are sent directly as the same JSON error body the routes use. An error
no handler turned into a 4xx ends here as one log line with the request id (its traceback at most once a minute
per place it was raised) and a 500 that names the request id; a client that went away before its body was read
is logged and counted as status 499, not as a 500.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import os
import re
import time
import traceback
from datetime import UTC, datetime
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import vocab
from serving.edge.metrics import CLIENT_CLOSED, Metrics
from serving.errors import HeadersTooLarge, PayloadTooLarge, RequestTimeout, ServingError, Unauthorized

access_log = logging.getLogger(vocab.SERVING_LOG + ".access")
error_log = logging.getLogger(vocab.SERVING_LOG + ".errors")
TRACEBACK_INTERVAL_SECONDS = 60.0  # a traceback raised at the same place is written at most this often

# What answers without the bearer token when KILN_API_TOKEN is set (docs/hardening.md#open-routes): liveness and
# readiness probes, which name no model; the OpenAPI docs; the try-it page and its static files, which ask for
# the token before calling anything; and the webhook, which is HMAC-signed instead. /metrics names every served
# model and version, so it needs the token unless KILN_METRICS_OPEN=1.
OPEN_PATHS = frozenset(
    {"/ping", "/health", "/v2/health/live", "/v2/health/ready", "/docs", "/openapi.json", "/v1/webhooks/mlflow", "/"}
)
OPEN_PATTERN = re.compile(r"^(/v2/models/[^/]+(/versions/[^/]+)?/ready|/static/[\w./-]+)$")


async def send_error(send: Send, error: ServingError) -> None:
    body = json.dumps(error.to_json()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AccessMiddleware:
    """Times the request, records `kiln_requests_total` and friends, writes one JSON log line; answers 500 for
    any exception that reaches it (logged once, with the request id) and 499 for a client that went away."""

    def __init__(self, app: ASGIApp, metrics: Metrics, enabled: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.enabled = enabled
        self.tracebacks = TracebackLimiter(TRACEBACK_INTERVAL_SECONDS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        response: dict[str, int] = {"status": 0, "bytes": 0}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                message["headers"] = _with_version(
                    scope, [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                )
            elif message["type"] == "http.response.body":
                response["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except ClientDisconnect:
            response["status"] = response["status"] or CLIENT_CLOSED
            self.metrics.client_disconnected(_endpoint(scope))
        except Exception as err:  # noqa: BLE001 - the one place an unexpected error becomes a 500
            self._internal_error(scope, request_id, err)
            if not response["status"]:
                await send_error(send_wrapper, InternalError(request_id))
        finally:
            self._record(scope, response, time.perf_counter() - start, request_id)

    def _internal_error(self, scope: Scope, request_id: str, err: Exception) -> None:
        entry: dict[str, Any] = {
            "event": "internal_error",
            "request_id": request_id,
            "method": scope["method"],
            "path": scope["path"],
            "error": f"{type(err).__name__}: {str(err)[:500]}",
        }
        place = self.tracebacks.place(err)
        if self.tracebacks.allow(place):
            entry["traceback"] = "".join(traceback.format_exception(err))
        else:
            entry["traceback"] = f"suppressed: the same error at {place} was logged with its traceback recently"
        error_log.error(entry)

    def _record(self, scope: Scope, response: dict[str, int], seconds: float, request_id: str) -> None:
        state = scope.get("state", {})
        model, version = state.get("model", ""), state.get("version", "")
        endpoint = _endpoint(scope)
        status = response["status"] or 500
        self.metrics.observe_request(model, version, endpoint, status, seconds)
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
                "status": status,
                "ms": round(seconds * 1000, 3),
                "model": model or None,
                "version": version or None,
                "bytes_in": _int(_header(scope, b"content-length")),
                "bytes_out": response["bytes"],
                "client": f"{client[0]}:{client[1]}" if client else None,
            }
        )


def _with_version(scope: Scope, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Name the model and version on every answer, errors included, so a client can tell which side of a canary
    answered (serving/dataplane.py writes them on the request's state)."""
    state = scope.get("state") or {}
    if state.get("version") and not any(k.lower() == b"x-kiln-model-version" for k, _ in headers):
        headers += [
            (b"x-kiln-model", str(state["model"]).encode()),
            (b"x-kiln-model-version", str(state["version"]).encode()),
        ]
    return headers


class InternalError(ServingError):
    status_code = 500
    code = "internal"

    def __init__(self, request_id: str) -> None:
        super().__init__(f"internal error; the server log has it under request id {request_id}")


class TracebackLimiter:
    """Allows a traceback per place an error was raised (its innermost file and line) once per interval, so a
    flood of the same fault writes one traceback a minute, not one per request."""

    def __init__(self, interval: float, max_places: int = 1024) -> None:
        self.interval = interval
        self.max_places = max_places
        self._last: dict[str, float] = {}

    @staticmethod
    def place(err: BaseException) -> str:
        frames = traceback.extract_tb(err.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
        return f"{type(err).__name__} at {where}"

    def allow(self, place: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        last = self._last.get(place)
        if last is not None and now - last < self.interval:
            return False
        if len(self._last) >= self.max_places:  # bounded memory whatever the traffic
            self._last.clear()
        self._last[place] = now
        return True


def _request_id(scope: Scope) -> str:
    """The client's X-Request-Id when it is a sane token (it is echoed and logged), else a fresh one: this
    process's random prefix and a counter (os.urandom per request cost ~1 ms of CPU in a sandboxed kernel)."""
    given = _header(scope, b"x-request-id")
    if given and len(given) <= 128 and _REQUEST_ID.fullmatch(given):
        return given
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


_ID_PREFIX = os.urandom(4).hex()  # unique per worker process, so ids from N workers do not collide
_ID_COUNTER = itertools.count(1)


_REQUEST_ID = re.compile(r"[\w.:-]+")


def _endpoint(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def _int(text: str | None) -> int:
    return int(text) if text and text.isdigit() and len(text) < 19 else 0


class AuthMiddleware:
    """`Authorization: Bearer <KILN_API_TOKEN>` on every path but the open ones."""

    def __init__(self, app: ASGIApp, token: str, metrics_open: bool = False) -> None:
        self.app = app
        self.token = token.encode()
        self.metrics_open = metrics_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or _is_open(path) or (self.metrics_open and path == "/metrics"):
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
    """The request guards: 431 for too many or too large headers, 413 for a declared Content-Length over the
    limit before reading (chunked bodies are counted as they come), 408 when the body has not fully arrived
    `timeout` seconds after the request began (a slow or half-sent body holds a connection no longer)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout: float = 30.0,
        max_header_bytes: int = 64 * 1024,
        max_headers: int = 100,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers_error = self._check_headers(scope)
        if headers_error is not None:
            await send_error(send, headers_error)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_error(send, self._too_large(int(declared)))
            return
        received = 0
        body_done = False
        deadline = asyncio.get_running_loop().time() + self.timeout

        async def guarded_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body, receive() only waits for a disconnect: no deadline on that
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(
                    f"the body did not arrive within {self.timeout:g} s (KILN_BODY_TIMEOUT_SECONDS); "
                    f"{received} bytes came"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large(received)
                body_done = not message.get("more_body", False)
            return message

        await self.app(scope, guarded_receive, send)

    def _check_headers(self, scope: Scope) -> ServingError | None:
        headers = scope["headers"]
        if len(headers) > self.max_headers:
            return HeadersTooLarge(f"the request has {len(headers)} headers; at most {self.max_headers} are read")
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        size += sum(len(k) + len(v) + 4 for k, v in headers)
        if size > self.max_header_bytes:
            return HeadersTooLarge(
                f"the request line and headers are {size} bytes; the limit is {self.max_header_bytes}"
            )
        return None

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
