"""Latency of the job service: start answered, job running, first epoch logged, cancel done.

    python bench/jobs_latency.py --trials 3

Writes a one-file MLproject into a temporary folder (an entry point that imports mlflow, logs one metric per
epoch with step=epoch and sleeps), starts `kiln jobs serve` on it with a fresh sqlite store, and per trial:
POSTs a start, polls until the job runs and until the log shows epoch 1, then cancels it and times the
cancel call (which returns once the process group is gone and the MLflow run is KILLED).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import httpx

MLPROJECT = """\
name: bench
entry_points:
  tiny:
    parameters:
      epochs: {type: float, default: 500}
    command: "python train.py --epochs {epochs}"
"""
TRAIN = """\
import argparse, time
import mlflow
p = argparse.ArgumentParser(); p.add_argument("--epochs", type=int); a = p.parse_args()
with mlflow.start_run():
    for epoch in range(1, a.epochs + 1):
        mlflow.log_metric("train_loss", 1.0 / epoch, step=epoch)
        print(f"Epoch {epoch}/{a.epochs}", flush=True)
        time.sleep(0.5)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(check: Callable[[], object], timeout: float = 300, every: float = 0.02) -> float:
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"gave up after {timeout}s")
        time.sleep(every)
    return time.perf_counter()


def trial(url: str) -> dict[str, float]:
    t0 = time.perf_counter()
    res = httpx.post(f"{url}/api/training/start", json={"entry_point": "tiny"}, timeout=60)
    answered = time.perf_counter()
    res.raise_for_status()
    job = f"{url}/api/training/{res.json()['job_id']}"
    running = wait(lambda: httpx.get(job).json()["status"] == "running")
    first = wait(lambda: re.search(r"Epoch 1/", httpx.get(f"{job}/logs").text), every=0.1)
    c0 = time.perf_counter()
    done = httpx.post(f"{job}/cancel", timeout=120).json()
    cancelled = time.perf_counter()
    if done["status"] != "cancelled":
        raise RuntimeError(f"cancel left the job {done['status']}: {done}")
    return {
        "start answered (ms)": (answered - t0) * 1000,
        "running after (ms)": (running - t0) * 1000,
        "first epoch after (s)": first - t0,
        "cancel took (ms)": (cancelled - c0) * 1000,
    }


@click.command()
@click.option("--trials", default=3, show_default=True, type=click.IntRange(1, 20))
def main(trials: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "MLproject").write_text(MLPROJECT)
        (root / "train.py").write_text(TRAIN)
        port = free_port()
        env = os.environ | {"KILN_PROJECT_DIR": tmp, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
        env |= {"MLFLOW_DISABLE_TELEMETRY": "true", "KILN_JOBS_POLL_SECONDS": "0.1"}
        cmd = [sys.executable, "-m", "kiln", "jobs", "serve", "--port", str(port)]
        server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            wait(lambda: _healthy(url), timeout=120, every=0.2)
            rows = [trial(url) for _ in range(trials)]
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {trials} trials")
    for key in rows[0]:
        values = [r[key] for r in rows]
        print(f"{key:>22}: median {statistics.median(values):8.1f}  min {min(values):8.1f}  max {max(values):8.1f}")


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
