"""Decoding costs no more than the model can use, and slow or piled-up connections cannot hold the server.

    .venv/bin/python -m pytest tests/serving/test_decode_limits.py -q

A per-model limit from the contract refuses a small file that declares a huge image (413, from the header alone);
JPEGs decode at the decoder's reduced scale that still covers the model's input; a process-wide budget of pixels
makes a request past it wait, then answer 503 with Retry-After; uvicorn with kiln's protocol closes a head that
does not arrive in time (408) and refuses connections past the per-client cap (503).
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from PIL import Image

from serving.errors import PayloadTooLarge
from serving.runtime import imaging
from serving.runtime.imaging import Busy, DecodeBudget, decode_for_model, decode_limit


def jpeg(width: int, height: int, gray: bool = False) -> bytes:
    image = Image.new("L" if gray else "RGB", (width, height), 128)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=50)
    return out.getvalue()


def lying_jpeg(width: int, height: int) -> bytes:
    """A 8x8 JPEG whose SOF header says width x height: a few hundred bytes that would decode huge."""
    data = bytearray(jpeg(8, 8))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_the_limit_comes_from_the_contract() -> None:
    assert decode_limit((64, 64)) == 2048 * 2048  # the floor: a 64-px model still takes a web-sized photo
    assert decode_limit((640, 640)) == 64 * 640 * 640
    assert decode_limit((4096, 4096)) == imaging.MAX_PIXELS


def test_a_small_file_declaring_8000x8000_is_413_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = lying_jpeg(8000, 8000)
    assert len(data) < 1000
    decoded: list[int] = []
    monkeypatch.setattr(imaging, "_decode", lambda *a: decoded.append(1))
    with pytest.raises(PayloadTooLarge, match=r"8000x8000 \(64,000,000 pixels\); this model takes at most"):
        decode_for_model(data, decode_limit((256, 256)), (256, 256))
    assert decoded == []


@pytest.mark.parametrize(("side", "cover", "expected"), [(1024, 128, 128), (1024, 200, 256), (1024, 600, 1024)])
def test_jpegs_decode_at_the_smallest_scale_that_covers_the_model(side: int, cover: int, expected: int) -> None:
    for gray in (False, True):
        image, original = decode_for_model(jpeg(side, side, gray), decode_limit((cover, cover)), (cover, cover))
        assert original == (side, side)
        assert image.shape[:2] == (expected, expected)
        assert image.ndim == (2 if gray else 3)


def test_pngs_decode_whole_and_are_bounded_by_the_limit() -> None:
    ok, png = cv2.imencode(".png", np.zeros((300, 300), np.uint8))
    image, original = decode_for_model(png.tobytes(), 300 * 300, (64, 64))
    assert image.shape == (300, 300) and original == (300, 300)
    with pytest.raises(PayloadTooLarge):
        decode_for_model(png.tobytes(), 300 * 300 - 1, (64, 64))


def test_the_budget_makes_a_request_wait_then_refuses_it_with_retry_after() -> None:
    budget = DecodeBudget(budget=100, wait_seconds=0.3)
    release = threading.Event()

    def first() -> None:
        with budget.hold(80):
            release.wait(5)

    holder = threading.Thread(target=first)
    holder.start()
    time.sleep(0.05)
    start = time.monotonic()
    with pytest.raises(Busy) as refused, budget.hold(80):
        pass
    assert 0.25 < time.monotonic() - start < 3
    assert refused.value.status_code == 503 and refused.value.headers == {"Retry-After": "1"}
    with budget.hold(20):  # fits beside the first
        assert budget.in_flight == 100
    waiter_done = threading.Event()

    def waiter() -> None:
        with budget.hold(80):
            waiter_done.set()

    threading.Thread(target=waiter).start()
    time.sleep(0.05)
    release.set()  # the first request finishes: the waiting one goes ahead
    assert waiter_done.wait(3)
    holder.join()
    assert budget.in_flight == 0


# --- the real socket: header timeout and connection caps ------------------------------------------------------


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    import uvicorn

    from serving.edge import transport

    monkeypatch.setenv("KILN_HEADER_TIMEOUT_SECONDS", "1.5")
    monkeypatch.setenv("KILN_MAX_CONNECTIONS_PER_CLIENT", "3")
    transport.connection_limits.cache_clear()

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
            await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, access_log=False, http=transport.KilnHttpProtocol, lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.02)
    yield sock.getsockname()[1]
    srv.should_exit = True
    thread.join(timeout=10)
    transport.connection_limits.cache_clear()


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def test_slow_heads_get_408_and_connections_past_the_per_client_cap_get_503(server: int) -> None:
    socks = [socket.create_connection(("127.0.0.1", server), timeout=5) for _ in range(5)]
    try:
        time.sleep(0.2)  # the refused ones are answered on accept, before they send anything
        refused, admitted = [], []
        for s in socks:
            s.settimeout(0.1)
            try:
                refused.append(read_all(s))
            except TimeoutError:
                admitted.append(s)
        for s in admitted:
            s.settimeout(5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
        start = time.monotonic()
        timed_out = [read_all(s) for s in admitted]
        waited = time.monotonic() - start
    finally:
        for s in socks:
            s.close()
    assert len(refused) == 2 and all(a.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in a for a in refused)
    assert len(timed_out) == 3 and all(a.startswith(b"HTTP/1.1 408") for a in timed_out), timed_out
    assert b"within 1.5 s" in timed_out[0] and waited < 4
    with socket.create_connection(("127.0.0.1", server), timeout=5) as s:  # the slots are free again
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_all(s).startswith(b"HTTP/1.1 200")
