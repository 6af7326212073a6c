"""Polling helpers for the job-service tests (a plain module: conftest files are not importable by name).

from jobs_helpers import wait_for
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from fastapi.testclient import TestClient

from jobs.store import JobStore


def wait_for(client: TestClient, job_id: str, check: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/training/{job_id}").json()
        if check(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting on job {job_id}: {job}")
        time.sleep(0.25)


def wait_log(client: TestClient, job_id: str, pattern: str, timeout: float = 60) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, client.get(f"/api/training/{job_id}/logs").text)
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {pattern!r} in the log of {job_id}")
        time.sleep(0.25)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s")
        time.sleep(0.05)


def kill_leftover_jobs(jobs_db: Path) -> None:
    if not jobs_db.exists():
        return
    store = JobStore(jobs_db)
    for job in store.list_jobs(("running",)):
        if job.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, signal.SIGKILL)
    store.close()
