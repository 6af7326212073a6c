"""`kiln serve`: flags, one-line errors before the port opens, the listening socket's TCP_NODELAY, and
(slow) the real command serving requests with one and with two worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from serving_helpers import Registry, image_example, seg_model

from kiln.cli import main
from serving.cli import bind_tcp


def test_serve_is_mounted_on_the_kiln_cli() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for flag in ("--models", "--alias", "--host", "--port", "--workers"):
        assert flag in result.output


@pytest.fixture
def one_model(fresh_registry: Registry, monkeypatch: pytest.MonkeyPatch) -> Registry:
    fresh_registry.register("seg", seg_model(), image_example(32))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_registry.uri)
    return fresh_registry


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--models", "ghost"], {}, "registered model 'ghost' has no alias 'production'"),
        (["--models", "seg", "--alias", "staging"], {}, "registered model 'seg' has no alias 'staging'"),
        (["--alias", "canary"], {}, "no registered model has the alias 'canary'"),
        (["--models", " , "], {}, "--models is empty"),
        (["--models", "seg"], {"KILN_MAX_BATCH_SIZE": "many"}, "KILN_MAX_BATCH_SIZE='many' is not a valid int"),
        (["--workers", "0"], {}, "0 is not in the range"),
    ],
)
def test_bad_setups_fail_in_one_line(one_model: Registry, args: list[str], env: dict[str, str], message: str) -> None:
    result = CliRunner().invoke(main, ["serve", "--port", str(_free_port()), *args], env=env)  # bound first
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_taken_port_is_one_line_too() -> None:
    taken = bind_tcp("127.0.0.1", 0)
    taken.listen()
    with pytest.raises(Exception, match="cannot bind 127.0.0.1"):
        bind_tcp("127.0.0.1", taken.getsockname()[1])
    taken.close()


def test_accepted_connections_get_tcp_nodelay() -> None:
    """uvicorn#3149: a listener bound without IPPROTO_TCP gives keep-alive connections Nagle's 40 ms stalls."""
    sock = bind_tcp("127.0.0.1", 0)
    nodelay: list[int] = []

    async def scenario() -> None:
        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = writer.get_extra_info("socket")
            nodelay.append(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=sock)
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        for _ in range(100):
            if nodelay:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()

    asyncio.run(scenario())
    assert nodelay and nodelay[0] != 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(registry: Registry, workers: int, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = _free_port()
    log = tmp_path / f"serve-{workers}.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.uri, "KILN_POLL_SECONDS": "0.5"}
    cmd = [sys.executable, "-m", "kiln", "serve", "--models", "seg", "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--workers", str(workers)], env=env, stderr=log.open("wb"), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                return proc, url, log
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.3)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_kiln_serve_end_to_end(fresh_registry: Registry, tmp_path: Path, workers: int) -> None:
    fresh_registry.register("seg", seg_model(0.5), image_example(32))
    proc, url, log = _serve(fresh_registry, workers, tmp_path)
    try:
        with httpx.Client(base_url=url, timeout=10) as http:
            for _ in range(6):  # keep-alive requests: each must be fast on every worker
                start = time.perf_counter()
                assert http.get("/v1/models/seg").json()["version"] == "1"
                assert time.perf_counter() - start < 1.0
            fresh_registry.register("seg", seg_model(0.25), image_example(32))
            deadline = time.monotonic() + 60
            while http.get("/v1/models/seg").json()["version"] != "2":
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            metrics = http.get("/metrics").text
            assert 'kiln_requests_total{endpoint="/v1/models/{name}",model=""' in metrics
    finally:
        assert _stop(proc) == 0, log.read_text()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    requests = [e for e in lines if e.get("event") == "request" and e["path"] == "/v1/models/seg"]
    assert requests and all(e["status"] == 200 for e in requests)
