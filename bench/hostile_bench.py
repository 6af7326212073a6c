"""Memory and files of `kiln serve` under hostile uploads and slow-header connections (docs/hardening.md).

    python bench/hostile_bench.py /tmp/kiln-hostile      # about a minute; prints a JSON summary

Serves the bench UNet (256x256 gray contract, bench/benchmodels.py) alone, polls the server's RSS every 10 ms and
its open files, and sends: four concurrent 335-byte JPEGs whose header says 8000x8000, four concurrent real
2048x2048 JPEGs (the largest the model's limit takes; decoded at 1/8 scale), one 8192x8192 PNG, and 300
connections that trickle a request head and never finish it. Loopback only; every loop is bounded.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import benchmodels as bm  # noqa: E402
from loadgen import ServerProcess, free_port  # noqa: E402

SLOW_CONNECTIONS = 300


def jpeg(width: int, height: int, flat: bool = False) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = np.full((height, width), 128, np.uint8) if flat else rng.integers(0, 255, (height, width), dtype=np.uint8)
    image = Image.fromarray(pixels)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()


def lying_jpeg(width: int, height: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (8, 8), 128).save(out, format="JPEG", quality=50)
    data = bytearray(out.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def png(side: int) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", np.zeros((side, side), np.uint8), [int(cv2.IMWRITE_PNG_COMPRESSION), 9])
    return bytes(encoded.tobytes())


class Sampler:
    """Peak RSS (MiB) and open files of one process, polled every 10 ms while `with` lasts."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak_rss = 0.0
        self.peak_fds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss / 2**20)
            self.peak_fds = max(self.peak_fds, self.proc.num_fds())
            time.sleep(0.01)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def post(port: int, body: bytes, media: str) -> int:
    url = f"http://127.0.0.1:{port}/v1/models/{bm.IMAGE_MODEL}/predict"
    request = urllib.request.Request(url, data=body, headers={"Content-Type": media}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def burst(server: ServerProcess, send: Callable[[], int], count: int) -> dict[str, object]:
    rss = psutil.Process(server.proc.pid)
    idle = rss.memory_info().rss / 2**20
    start = time.monotonic()
    with Sampler(server.proc.pid) as sampler, concurrent.futures.ThreadPoolExecutor(count) as pool:
        statuses = list(pool.map(lambda _: send(), range(count)))
    seconds = time.monotonic() - start
    time.sleep(1.0)
    after = rss.memory_info().rss / 2**20
    return {"statuses": statuses, "seconds": round(seconds, 2), "idle_mib": round(idle),
            "peak_mib": round(sampler.peak_rss), "after_mib": round(after)}  # fmt: skip


def slow_heads(server: ServerProcess) -> dict[str, object]:
    proc = psutil.Process(server.proc.pid)
    before = proc.num_fds()
    socks = []
    with Sampler(server.proc.pid) as sampler:
        for _ in range(SLOW_CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            socks.append(sock)
        time.sleep(0.3)
        for sock in socks:
            with contextlib.suppress(OSError):  # a refused one may already be closed
                sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        answers: dict[str, int] = {}
        deadline = time.monotonic() + 60
        for sock in socks:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                head = sock.recv(64).split(b"\r\n", 1)[0].decode(errors="replace") or "closed"
            except ConnectionResetError:
                head = "reset"
            except TimeoutError:
                head = "still open"
            answers[head] = answers.get(head, 0) + 1
        seconds = time.monotonic() - (deadline - 60)
    for sock in socks:
        sock.close()
    time.sleep(0.5)
    return {"answers": answers, "open_files_before": before, "open_files_peak": sampler.peak_fds,
            "open_files_after": proc.num_fds(), "seconds_until_all_answered": round(seconds, 1)}  # fmt: skip


def start(registry: bm.BenchRegistry, folder: Path, extra: dict[str, str]) -> ServerProcess:
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "kiln"), "serve", "--models", bm.IMAGE_MODEL, "--port", str(port)]
    env = {"MLFLOW_TRACKING_URI": registry.uri, "KILN_ACCESS_LOG": "0", "KILN_POLL_SECONDS": "0", **extra}
    server = ServerProcess("kiln-hostile", [*cmd, "--log-level", "warning"], port, env, folder)
    server.wait_ready()
    assert post(port, jpeg(256, 256), "image/jpeg") == 200  # warm: the first request's allocations are no attack
    return server


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/kiln-hostile")
    registry = bm.create_registry(folder)
    path, example, contract = bm.unet()
    bm.register(bm.IMAGE_MODEL, path, example, contract, "production")
    summary: dict[str, object] = {}
    server = start(registry, folder, {})
    try:
        port = server.port
        lying, big_jpeg, big_png = lying_jpeg(8000, 8000), jpeg(2048, 2048), png(8192)
        summary |= {
            "lying_jpeg_bytes": len(lying),
            "four_8000x8000_header_jpegs": burst(server, lambda: post(port, lying, "image/jpeg"), 4),
            "four_2048x2048_jpegs": burst(server, lambda: post(port, big_jpeg, "image/jpeg"), 4),
            "png_8192x8192_bytes": len(big_png),
            "one_8192x8192_png": burst(server, lambda: post(port, big_png, "image/png"), 1),
            "slow_header_connections": slow_heads(server),
        }
    finally:
        server.stop()
    # An operator who lifts the model's limit to 8192^2: real 8000x8000 JPEGs decode at 1/8, and the answer maps at
    # 8000x8000 go through the process's pixel budget one or two at a time.
    server = start(registry, folder, {"KILN_MAX_DECODED_PIXELS": str(64 * 2**20)})
    try:
        port, flat = server.port, jpeg(8000, 8000, flat=True)
        summary["limit_lifted_8000x8000_jpeg_bytes"] = len(flat)
        summary["limit_lifted_four_8000x8000_jpegs"] = burst(server, lambda: post(port, flat, "image/jpeg"), 4)
    finally:
        server.stop()
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
