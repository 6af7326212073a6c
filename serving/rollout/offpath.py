"""Work done after the answer has been sent, off the request path: shadow runs, drift statistics, captures.

    python -c "from serving.rollout.offpath import OffPath; help(OffPath)"

A request hands a job over in microseconds (a deque append, no wake-up) and returns. One daemon thread drains the
queue every TICK_S, and a job marked `when_idle` (a shadow run, which takes CPU like a production run) starts only
while no production request is in flight: production requests never queue behind a shadow run they could not see. The
queue is bounded; when it is full, or a job waited longer than `max_wait_s` for an idle moment, the job is dropped
and counted, never the request. Each kind of job has a budget, a share of wall time (KILN_SHADOW_BUDGET,
KILN_DRIFT_BUDGET): a job that took d seconds keeps its kind out for d * (1 / budget - 1) afterwards, so under
continuous traffic the shadow samples fewer requests instead of taking time from production. A kind named in
`adaptive` (the shadow) gets more than its budget when production leaves the machine idle: up to IDLE_USE of
the share of recent wall time with no production request in flight (`IdleShare`, a 10 s half-life), so a lightly
loaded server compares most requests and a saturated one falls back to the budget. A job that raises is logged
and counted, and the worker carries on.
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


IDLE_USE = 0.8  # share of production's idle time an adaptive kind may fill
IDLE_HALF_LIFE_S = 10.0  # how fast the measured idle share forgets


class IdleShare:
    """The share of recent wall time with no production request in flight, exponentially weighted."""

    def __init__(self, half_life_s: float = IDLE_HALF_LIFE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.half_life_s, self._clock = half_life_s, clock
        self._idle = self._total = 0.0
        self._last = clock()
        self._was_idle = True

    def mark(self, idle_now: bool) -> None:
        """Production just became idle (True) or busy (False)."""
        now = self._clock()
        elapsed = max(now - self._last, 0.0)
        decay = 0.5 ** (elapsed / self.half_life_s)
        self._idle = self._idle * decay + (elapsed if self._was_idle else 0.0)
        self._total = self._total * decay + elapsed
        self._last, self._was_idle = now, idle_now

    def share(self) -> float:
        self.mark(self._was_idle)
        return self._idle / self._total if self._total > 0 else 1.0


def adaptive_budget(budget: float, idle_share: float) -> float:
    """The share of wall time an adaptive kind may use: its budget, or more while production leaves time idle."""
    return min(1.0, max(budget, IDLE_USE * idle_share))


# How often an idle worker looks for jobs. A request never wakes the worker itself (a wake-up per request is a
# thread switch and a GIL hand-over paid on the request path) unless the queue is half full.
TICK_S = 0.05


@dataclass
class _Job:
    fn: Callable[[], None]
    when_idle: bool
    dropped: Callable[[], None] | None
    kind: str
    queued: float = field(default_factory=time.monotonic)


class OffPath:
    """A bounded queue and one worker thread, gated on production being idle for the jobs that ask for it."""

    def __init__(
        self, max_queue: int = 256, max_wait_s: float = 2.0, budgets: dict[str, float] | None = None,
        adaptive: frozenset[str] = frozenset(),
    ) -> None:  # fmt: skip
        self.max_queue = max_queue
        self.max_wait_s = max_wait_s
        # kind -> share of wall time the worker may spend on jobs of that kind (1 = no limit)
        self.budgets = dict(budgets or {})
        self.adaptive = adaptive  # kinds whose budget grows with production's idle share
        self.idle_share = IdleShare()
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
        if self._inflight == 1:
            self.idle_share.mark(False)
        self._idle.clear()

    def end(self) -> None:
        """A production request finished."""
        self._inflight -= 1
        if self._inflight <= 0:
            self._inflight = 0
            self.idle_share.mark(True)
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
        if self._thread is None:
            self._start()
        if len(self._jobs) >= self.max_queue // 2:  # else the worker finds the job on its next tick
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
                    self._ready.wait(TICK_S)
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
        budget = self.budget(kind)
        if budget < 1.0:
            self._next_allowed[kind] = end + (end - start) * (1 / max(budget, 1e-6) - 1)

    def budget(self, kind: str) -> float:
        """The share of wall time jobs of `kind` may use now."""
        budget = self.budgets.get(kind, 1.0)
        return adaptive_budget(budget, self.idle_share.share()) if kind in self.adaptive else budget

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
