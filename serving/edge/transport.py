"""uvicorn's httptools protocol with limits on the request head and on connections: the bytes of the request line
and headers, the number of header fields, the time a head may take to arrive, and the connections open per client
address and in all. httptools buffers a header however long it is, uvicorn keeps every field and has no timeout
for a head, so without this one request could hold megabytes of headers (or 20,000 of them) in the server's
memory, and a client trickling header bytes (slowloris) could hold a connection, and a file, forever.

    KILN_MAX_HEADER_BYTES=16384 KILN_MAX_HEADERS=50 kiln serve     # (the defaults are 64 KiB and 100)
    KILN_HEADER_TIMEOUT_SECONDS=5 KILN_MAX_CONNECTIONS_PER_CLIENT=16 kiln serve   # (defaults 10 s, 64; 1024 in all)

A head not complete `header_timeout_seconds` after the connection opened (or, on a kept-alive connection, after the
next request's first byte) gets `408 Request Timeout` and a close, as nginx's `client_header_timeout`. A connection
past `max_connections_per_client` from one address, or past `max_connections` in all, gets `503` with
`Retry-After: 1` and a close as soon as it is accepted, as nginx's `limit_conn`; uvicorn's own
`--limit-concurrency` only answers once a head is complete, so it cannot stop a slow-header flood.

`kiln serve` passes `KilnHttpProtocol` as uvicorn's `http` class. The limits are read from the environment once
per process (workers rebuild them from the same variables). A request over either limit gets
`431 Request Header Fields Too Large` and the connection is closed, before any of it reaches the application;
`BodyLimitMiddleware` gives the same answer under any other ASGI server.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@functools.cache
def head_limits() -> tuple[int, int]:
    """(max_header_bytes, max_headers) from the server's settings (KILN_MAX_HEADER_BYTES, KILN_MAX_HEADERS)."""
    from serving.settings import ServeSettings

    settings = ServeSettings.from_env()
    return settings.max_header_bytes, settings.max_headers


@functools.cache
def connection_limits() -> tuple[float, int, int]:
    """(header_timeout_seconds, max_connections, max_connections_per_client) from the server's settings."""
    from serving.settings import ServeSettings

    settings = ServeSettings.from_env()
    return settings.header_timeout_seconds, settings.max_connections, settings.max_connections_per_client


_OPEN_BY_CLIENT: collections.Counter[str] = collections.Counter()  # this process's open connections per address


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing; httptools re-raises it wrapped in HttpParserCallbackError."""


class KilnHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that counts the bytes and fields of each request head and refuses past the limits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_head_bytes, self.max_header_fields = head_limits()
        self._head_open = False  # between a request's first byte and the end of its headers
        self._head_bytes = 0
        self._fields = 0
        self._refusal: str | None = None
        self.header_timeout, self.max_connections, self.max_per_client = connection_limits()
        self._head_timer: asyncio.TimerHandle | None = None
        self._counted: str | None = None  # the client address this connection is counted under

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        host = self.client[0] if self.client else "unknown"
        if len(self.connections) > self.max_connections:
            self._send_and_close(503, "too many connections to this server; retry shortly", "busy", retry=True)
        elif _OPEN_BY_CLIENT[host] >= self.max_per_client:
            reason = f"more than {self.max_per_client} connections from {host}; reuse a kept-alive connection"
            self._send_and_close(503, reason, "busy", retry=True)
        else:
            _OPEN_BY_CLIENT[host] += 1
            self._counted = host
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        if self._counted is not None:
            _OPEN_BY_CLIENT[self._counted] -= 1
            if _OPEN_BY_CLIENT[self._counted] <= 0:
                del _OPEN_BY_CLIENT[self._counted]
            self._counted = None
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        reason = f"the request head did not arrive within {self.header_timeout:g} s"
        self._send_and_close(408, reason, "header_timeout")

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        was_open = self._head_open
        super().data_received(data)
        # Counted only when the whole chunk was head: a head that starts inside a chunk (after a body) may be
        # under-counted by one chunk, never a body over-counted, so the bound is the limit plus one read.
        if self._refusal is None and was_open and self._head_open:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(f"the request line and headers are over {self.max_head_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open, self._head_bytes, self._fields = True, 0, 0
        self._arm_head_timer()  # a kept-alive connection's next head gets the same time as the first

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > self.max_header_fields:
            self._refusal = f"the request has more than {self.max_header_fields} headers"
            raise HeadTooLarge(self._refusal)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._disarm_head_timer()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error; a refusal of ours raised inside the parser becomes a 431."""
        if self._refusal is not None:
            self._send_431(self._refusal)
        else:
            super().send_400_response(msg)

    def _refuse(self, reason: str) -> None:
        self._refusal = reason
        self._send_431(reason)

    def _send_431(self, reason: str) -> None:
        self._send_and_close(431, reason, "headers_too_large")

    def _send_and_close(self, status: int, reason: str, code: str, retry: bool = False) -> None:
        phrases = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}
        body = json.dumps({"error": reason, "code": code}).encode()
        head = (
            f"HTTP/1.1 {status} {phrases[status]}\r\n".encode()
            + b"content-type: application/json\r\n"
            + (b"retry-after: 1\r\n" if retry else b"")
            + b"content-length: "
            + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n"
        )
        if not self.transport.is_closing():
            self.transport.write(head + body)
            self.transport.close()
