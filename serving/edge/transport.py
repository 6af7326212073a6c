"""uvicorn's httptools protocol with limits on the request head: the bytes of the request line and headers, and
the number of header fields. httptools buffers a header however long it is and uvicorn keeps every field, so
without this one request could hold megabytes of headers (or 20,000 of them) in the server's memory.

    KILN_MAX_HEADER_BYTES=16384 KILN_MAX_HEADERS=50 kiln serve     # (the defaults are 64 KiB and 100)

`kiln serve` passes `KilnHttpProtocol` as uvicorn's `http` class. The limits are read from the environment once
per process (workers rebuild them from the same variables). A request over either limit gets
`431 Request Header Fields Too Large` and the connection is closed, before any of it reaches the application;
`BodyLimitMiddleware` gives the same answer under any other ASGI server.
"""

from __future__ import annotations

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

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > self.max_header_fields:
            self._refusal = f"the request has more than {self.max_header_fields} headers"
            raise HeadTooLarge(self._refusal)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
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
        body = json.dumps({"error": reason, "code": "headers_too_large"}).encode()
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
        )
        if not self.transport.is_closing():
            self.transport.write(head + body)
            self.transport.close()
