"""The jobs table: one sqlite row per training job, so jobs outlive the service that started them.

    sqlite3 .kiln/jobs.db 'select id, entry_point, status, run_id from jobs order by created_at desc'

Rows are written by the runner only. The service holds one connection behind a lock; sqlite runs in WAL mode
so a second reader (the command above) never blocks it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = "queued", "running", "completed", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    entry_point TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    experiment_name TEXT,
    log_path TEXT NOT NULL,
    total_epochs INTEGER,
    run_id TEXT,
    experiment_id TEXT,
    pid INTEGER,
    pid_started_at REAL,
    started_at REAL,
    finished_at REAL,
    exit_code INTEGER,
    error TEXT,
    current_epoch INTEGER,
    metrics TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created_at);
"""
_JSON_COLUMNS = ("params", "metrics")


class JobNotFoundError(LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r}")
        self.job_id = job_id


@dataclass
class Job:
    id: str
    entry_point: str
    params: dict[str, str]  # exactly the `-P name=value` strings handed to `mlflow run`
    status: str
    created_at: float  # unix seconds
    log_path: str
    experiment_name: str | None = None
    total_epochs: int | None = None  # the `epochs` param (given or default); None when the entry point has none
    run_id: str | None = None  # the MLflow run the job trains in (followed across `resume`)
    experiment_id: str | None = None
    pid: int | None = None  # leader of the job's process group (`mlflow run`); the group id equals it
    pid_started_at: float | None = None  # the leader's start time, to tell it from a later process reusing the pid
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    error: str | None = None
    current_epoch: int | None = None  # last progress seen; final once the job is terminal
    metrics: dict[str, float] = field(default_factory=dict)  # latest metrics; final once the job is terminal

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


_COLUMNS = tuple(f.name for f in fields(Job))


class JobStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, timeout=30, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)

    @contextmanager
    def _cursor(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            yield self._conn.cursor()

    def insert(self, job: Job) -> None:
        row = _to_row(job)
        marks = ", ".join("?" for _ in row)
        with self._cursor() as cur:
            cur.execute(f"INSERT INTO jobs ({', '.join(row)}) VALUES ({marks})", tuple(row.values()))

    def update(self, job_id: str, only_status: str | None = None, **changes: Any) -> Job:
        """Set columns of one job; with `only_status`, only while the job still has that status."""
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"no job column(s) {sorted(unknown)}")
        row = {k: json.dumps(v) if k in _JSON_COLUMNS else v for k, v in changes.items()}
        where, args = ("id = ?", [job_id]) if only_status is None else ("id = ? AND status = ?", [job_id, only_status])
        with self._cursor() as cur:
            cur.execute(f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in row)} WHERE {where}", (*row.values(), *args))
            if cur.rowcount == 0 and only_status is None:
                raise JobNotFoundError(job_id)
        return self.get(job_id)

    def delete(self, job_id: str) -> None:
        with self._cursor() as cur:
            cur.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            if cur.rowcount == 0:
                raise JobNotFoundError(job_id)

    def get(self, job_id: str) -> Job:
        with self._cursor() as cur:
            row = cur.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(job_id)
        return _from_row(row)

    def list_jobs(self, statuses: tuple[str, ...] = STATUSES, limit: int = 200) -> list[Job]:
        """Newest first."""
        marks = ", ".join("?" for _ in statuses)
        query = f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY created_at DESC LIMIT ?"
        with self._cursor() as cur:
            rows = cur.execute(query, (*statuses, limit)).fetchall()
        return [_from_row(r) for r in rows]

    def queued(self) -> list[Job]:
        """Queued jobs, oldest first: the order they start in."""
        return sorted(self.list_jobs((QUEUED,), limit=10_000), key=lambda j: j.created_at)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _to_row(job: Job) -> dict[str, Any]:
    return {k: json.dumps(v) if k in _JSON_COLUMNS else v for k, v in asdict(job).items()}


def _from_row(row: sqlite3.Row) -> Job:
    values = {k: json.loads(row[k]) if k in _JSON_COLUMNS else row[k] for k in _COLUMNS}
    return Job(**values)
