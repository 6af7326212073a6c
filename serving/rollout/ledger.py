"""What the workers of one `kiln serve --workers N` tell each other: canary answers, shadow comparisons and drift
observations, through a small SQLite file in the server's state folder (KILN_STATE_DIR).

    kiln serve --workers 2 --shadow challenger     # the CLI makes the state folder and removes it at exit
    sqlite3 "$KILN_STATE_DIR/rollout.sqlite" 'select worker, kind, count(*) from events group by 1, 2'

Each worker appends its own events to an in-memory buffer (the request path pays a list append), and a daemon
thread writes the buffer in one transaction every FLUSH_S, then reads the events the other workers wrote since
its last read and hands them to the same code that handled them locally (`Rollout.apply`). So every worker's
canary monitor, shadow statistics and drift windows hold the answers of the whole server: the guard rails judge
all workers' answers together, and /canary, /shadow and /drift report the whole server whichever worker answers.
SQLite rather than Prometheus' multiprocess mode: the guard rails and the drift scores need the answers and values
themselves, in order, not counters and histograms summed at scrape time. Events older than KEEP_S are deleted.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import vocab

log = logging.getLogger(vocab.SERVING_LOG + ".ledger")

FLUSH_S = 0.2  # how often a worker writes its events and reads the others'
KEEP_S = 3600.0  # events older than this are deleted (a drift window or a canary's answers are newer)
FILE_NAME = "rollout.sqlite"

_SCHEMA = """
create table if not exists events (
    id integer primary key autoincrement,
    worker text not null,
    kind text not null,
    model text not null,
    key text not null,
    body text not null,
    at real not null
);
create index if not exists events_at on events (at);
"""


@dataclass(frozen=True)
class Event:
    kind: str  # "answer" (canary), "comparison" (shadow), "observation" (drift)
    model: str
    key: str  # which canary, shadow pair or version the event belongs to
    body: dict[str, Any]


Apply = Callable[[list[Event]], None]


class Ledger:
    """One worker's side of the shared event log."""

    def __init__(self, folder: str | Path, worker: str | None = None) -> None:
        self.path = Path(folder) / FILE_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.worker = worker or f"{os.getpid()}-{os.urandom(3).hex()}"
        self._buffer: list[tuple[str, str, str, str, float]] = []
        self._lock = threading.Lock()
        self._last_id = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._db = self._connect()
        with self._db:
            self._db.executescript(_SCHEMA)
        # start after what is already there: a restarted worker does not replay a finished canary
        self._last_id = int(self._db.execute("select coalesce(max(id), 0) from events").fetchone()[0])
        self._pruned_at = time.monotonic()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False, isolation_level=None)
        db.execute("pragma journal_mode=wal")
        db.execute("pragma synchronous=normal")
        return db

    def publish(self, event: Event) -> None:
        """Queue one of this worker's events (any thread); written on the next flush."""
        row = (event.kind, event.model, event.key, json.dumps(event.body, default=float), time.time())
        with self._lock:
            self._buffer.append(row)

    def start(self, apply: Apply) -> None:
        """Flush and read every FLUSH_S on a daemon thread; `apply` gets the other workers' events, in order."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, args=(apply,), name="kiln-ledger", daemon=True)
            self._thread.start()

    def _run(self, apply: Apply) -> None:
        while not self._stop.wait(FLUSH_S):
            try:
                self.sync(apply)
            except Exception:  # a locked or full disk: the next round tries again, requests are not affected
                log.exception("the rollout ledger %s could not be synced", self.path)

    def sync(self, apply: Apply) -> int:
        """Write this worker's queued events, apply the others' new ones; returns how many were applied."""
        with self._lock:
            rows, self._buffer = self._buffer, []
        if rows:
            with self._db:
                self._db.execute("begin immediate")
                self._db.executemany(
                    "insert into events (worker, kind, model, key, body, at) values (?, ?, ?, ?, ?, ?)",
                    [(self.worker, *row) for row in rows],
                )
        found = self._db.execute(
            "select id, worker, kind, model, key, body from events where id > ? order by id", (self._last_id,)
        ).fetchall()
        if found:
            self._last_id = int(found[-1][0])
        others = [
            Event(kind, model, key, json.loads(body)) for _, w, kind, model, key, body in found if w != self.worker
        ]
        if others:
            apply(others)
        self._prune()
        return len(others)

    def _prune(self) -> None:
        if time.monotonic() - self._pruned_at < 60:
            return
        self._pruned_at = time.monotonic()
        with self._db:
            self._db.execute("delete from events where at < ?", (time.time() - KEEP_S,))

    def close(self, apply: Apply | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.sync(apply or (lambda events: None))
        finally:
            self._db.close()
