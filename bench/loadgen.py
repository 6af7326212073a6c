"""A small closed-loop HTTP/1.1 load generator and server-process helpers for the benchmarks in bench/.

    python bench/loadgen.py http://127.0.0.1:8080/ping --concurrency 4 --seconds 3

Each of `concurrency` keep-alive connections sends one prebuilt request, reads the whole response, and sends
the next: throughput at a fixed number of requests in flight, as `hey -c` or `wrk` measure it. Raw asyncio
streams keep the client's own CPU cost low (it shares the cores with the server). It only talks to
127.0.0.1: anything else is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

LOOPBACK = "127.0.0.1"

# (status, headers with lower-case names, body, monotonic time the response ended)
OnResponse = Callable[[int, dict[str, str], bytes, float], None]


@dataclass
class LoadResult:
    seconds: float  # length of the measured window
    latencies: list[float] = field(default_factory=list)  # of successful requests completed in the window
    statuses: Counter[int] = field(default_factory=Counter)
    failures: int = 0  # non-2xx answers and broken connections, in the window or not
    completed: int = 0  # successful answers in the whole run, warm-up and tail included
    first_failure: str = ""

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    @property
    def p50_ms(self) -> float:
        return 1000 * statistics.median(self.latencies) if self.latencies else float("nan")

    @property
    def p99_ms(self) -> float:
        return 1000 * self.percentile(99)


def http_request(path: str, body: bytes = b"", content_type: str = "", headers: dict[str, str] | None = None) -> bytes:
    """The bytes of one POST (or GET without body) request for keep-alive reuse."""
    method = "POST" if body or content_type else "GET"
    lines = [f"{method} {path} HTTP/1.1", f"Host: {LOOPBACK}", "Connection: keep-alive"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    status = int(status_line.split(b" ", 2)[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
        return status, headers, body
    return status, headers, await reader.readexactly(int(headers.get("content-length", "0")))


async def _connection(
    port: int,
    request: bytes,
    start: float,
    stop: float,
    result: LoadResult,
    on_response: OnResponse | None,
    halt: threading.Event | None,
) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        while time.monotonic() < stop and not (halt is not None and halt.is_set()):
            sent = time.monotonic()
            writer.write(request)
            try:
                status, headers, body = await asyncio.wait_for(_read_response(reader), timeout=120)
            except (ConnectionError, asyncio.IncompleteReadError, TimeoutError) as err:
                _fail(result, f"{type(err).__name__}: {err}")
                writer.close()
                reader, writer = await asyncio.open_connection(LOOPBACK, port)
                continue
            ended = time.monotonic()
            if on_response is not None:
                on_response(status, headers, body, ended)
            if not 200 <= status < 300:
                _fail(result, f"HTTP {status}: {body[:200]!r}")
                continue
            result.completed += 1
            if start <= ended <= stop:  # completions inside the window, as wrk counts them
                result.latencies.append(ended - sent)
                result.statuses[status] += 1
    finally:
        writer.close()


def _fail(result: LoadResult, message: str) -> None:
    result.failures += 1
    result.first_failure = result.first_failure or message


async def _run(
    port: int,
    request: bytes,
    concurrency: int,
    seconds: float,
    warmup: float,
    on: OnResponse | None,
    halt: threading.Event | None,
) -> LoadResult:
    begin = time.monotonic()
    start, stop = begin + warmup, begin + warmup + seconds
    result = LoadResult(seconds=seconds)
    await asyncio.gather(*(_connection(port, request, start, stop, result, on, halt) for _ in range(concurrency)))
    if halt is not None and halt.is_set():
        result.seconds = max(1e-9, min(seconds, time.monotonic() - start))
    return result


def run_load(
    port: int,
    request: bytes,
    *,
    concurrency: int,
    seconds: float,
    warmup: float = 1.0,
    on_response: OnResponse | None = None,
    halt: threading.Event | None = None,
) -> LoadResult:
    """Closed-loop load on 127.0.0.1:port; only requests completed after the warm-up, within `seconds`, count.
    Setting `halt` ends it early (each connection finishes the request it is on)."""
    return asyncio.run(_run(port, request, concurrency, seconds, warmup, on_response, halt))


# --- server processes -------------------------------------------------------------------------------------


class ServerProcess:
    """A server started as its own process group on 127.0.0.1, stopped with SIGINT (then SIGKILL)."""

    def __init__(self, name: str, cmd: list[str], port: int, env: dict[str, str], log_dir: Path) -> None:
        self.name, self.port = name, port
        self.log = log_dir / f"{name}.log"
        full_env = {**os.environ, **env}
        self.proc = subprocess.Popen(
            cmd, env=full_env, stdout=subprocess.DEVNULL, stderr=self.log.open("wb"), start_new_session=True
        )

    def wait_ready(self, path: str = "/ping", timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://{LOOPBACK}:{self.port}{path}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready within {timeout:.0f}s; see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> ServerProcess:
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (a server and its workers)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="http://127.0.0.1:PORT/path (GET)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    parts = urlsplit(args.url)
    if parts.hostname not in (LOOPBACK, "localhost"):
        parser.error(f"only {LOOPBACK} is a valid target, not {parts.hostname!r}")
    request = http_request(parts.path or "/")
    result = run_load(parts.port or 80, request, concurrency=args.concurrency, seconds=args.seconds)
    print(f"{result.throughput:.1f} req/s  p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms", end="")
    print(f"  failures {result.failures}")


if __name__ == "__main__":
    main()
