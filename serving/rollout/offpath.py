"""Work done after the answer has been sent, off the request path: shadow runs, drift statistics, captures.

    python -c "from serving.rollout.offpath import OffPath; help(OffPath)"

A request hands a job over in microseconds (a deque append) and returns. One daemon thread drains the queue,
and a job marked `when_idle` (a shadow run, which takes CPU like a production run) starts only while no
production request is in flight: production requests never queue behind a shadow run they could not see. The
queue is bounded; when it is full, or a job waited longer than `max_wait_s` for an idle moment, the job is dropped
and counted, never the request. Each kind of job has a budget, a share of wall time (KILN_SHADOW_BUDGET,
KILN_DRIFT_BUDGET): a job that took d seconds keeps its kind out for d * (1 / budget - 1) afterwards, so under
continuous traffic the shadow samples fewer requests instead of taking time from production. A job that raises
is logged and counted, and the worker carries on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from core import vocab

log = logging.getLogger(vocab.SERVING_LOG + ".offpath")


@dataclass
class _Job:
    fn: Callable[[], None]
    when_idle: bool
    dropped: Callable[[], None] | None
    kind: str
    queued: float = field(default_factory=time.monotonic)


class OffPath:
    """A bounded queue and one worker thread, gated on production being idle for the jobs that ask for it."""

    def __init__(self, max_queue: int = 256, max_wait_s: float = 2.0, budgets: dict[str, float] | None = None) -> None:
        self.max_queue = max_queue
        self.max_wait_s = max_wait_s
        # kind -> share of wall time the worker may spend on jobs of that kind (1 = no limit)
        self.budgets = dict(budgets or {})
        self._next_allowed: dict[str, float] = {}  # kind -> perf_counter before which its jobs are dropped
        self._jobs: deque[_Job] = deque()
        self._ready = threading.Condition()
        self._idle = threading.Event()
        self._idle.set()
        self._inflight = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._busy = False
        self.done = 0
        self.dropped = 0
        self.failed = 0

    # --- the request side (event loop thread) ----------------------------------------------------------------

    def begin(self) -> None:
        """A production request started."""
        self._inflight += 1
        self._idle.clear()

    def end(self) -> None:
        """A production request finished."""
        self._inflight -= 1
        if self._inflight <= 0:
            self._inflight = 0
            self._idle.set()

    def submit(
        self, fn: Callable[[], None], *, kind: str = "job", when_idle: bool = False,
        dropped: Callable[[], None] | None = None,
    ) -> bool:  # fmt: skip
        """Queue `fn`; False (and `dropped()` called) when the queue is full, the worker is closed, or jobs of
        this kind have used up their share of time (see `budgets`)."""
        over_budget = time.perf_counter() < self._next_allowed.get(kind, 0.0)
        if over_budget or self._closed or len(self._jobs) >= self.max_queue:
            self.dropped += 1
            if dropped is not None:
                dropped()
            return False
        self._jobs.append(_Job(fn, when_idle, dropped, kind))
        self._start()
        with self._ready:
            self._ready.notify()
        return True

    @property
    def queued(self) -> int:
        return len(self._jobs)

    # --- the worker --------------------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="kiln-offpath", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._jobs and not self._closed:
                    self._ready.wait(1.0)
                if self._closed:
                    return
                job = self._jobs.popleft()
                self._busy = True
            try:
                self._run(job)
            finally:
                self._busy = False

    def _run(self, job: _Job) -> None:
        if job.when_idle and not self._wait_idle(job):
            self.dropped += 1
            if job.dropped is not None:
                job.dropped()
            return
        start = time.perf_counter()
        try:
            job.fn()
            self.done += 1
        except Exception:
            self.failed += 1
            log.exception("off-path job failed")
        self._charge(job.kind, start, time.perf_counter())

    def _charge(self, kind: str, start: float, end: float) -> None:
        """A job that took d seconds keeps its kind off the worker for d * (1 / budget - 1) more: jobs of that kind
        then use at most `budget` of the wall time, whatever the traffic, and the rest stays production's."""
        budget = self.budgets.get(kind, 1.0)
        if budget < 1.0:
            self._next_allowed[kind] = end + (end - start) * (1 / max(budget, 1e-6) - 1)

    def _wait_idle(self, job: _Job) -> bool:
        remaining = job.queued + self.max_wait_s - time.monotonic()
        return remaining > 0 and self._idle.wait(remaining)

    def wait_empty(self, timeout: float = 10.0) -> bool:
        """Block until every queued job has run (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while (self._jobs or self._busy) and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._jobs

    def close(self) -> None:
        self._closed = True
        with self._ready:
            self._ready.notify_all()
