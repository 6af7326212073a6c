"""The server's side of a canary release: route a share of a model's requests to the candidate, sticky per routing
key, test both sides' answers sequentially, and end the canary when a guard rail fails.

    kiln promote edgnet --version 4 --canary 10
    curl -H 'X-Kiln-Routing-Key: customer-42' -F image=@part.png 127.0.0.1:8080/v1/models/edgnet/predict
    curl -s 127.0.0.1:8080/v1/models/edgnet/canary | python -m json.tool

The split comes from the registry (registry/canary.py), so every server watching the model routes the same
share; a request with a routing key goes to the side its key hashes to (BLAKE2 of model and key, the same on
every server and after every restart), one without goes by chance. Each answer is recorded on its side: its
status (a 5xx is an error of the model, a 4xx is the client's) and its latency. The guard rails are sequential
tests (registry/sequential.py, RailMonitor) fed every answer since the candidate was loaded here, checked after
every candidate answer and every 5xx once the candidate has answered `min_requests`; they end a canary only
when the data prove a rail crossed, with a 1% chance in all of ending one whose candidate is as good as
production, however long it runs (docs/decisions.md measures it):
- the candidate's 5xx rate above production's, or above `max_error_rate`;
- the candidate's latency tail above `max_p99_ratio` x production's (answers above production's running p99
  come from the candidate more often than its share; production's p99 needs 100 answers);
- when the challenger being shadowed is the candidate, its mean agreement with production below `min_agreement`
  (per-request agreement: mask IoU, box F1, label agreement), after `min_requests` comparisons; for regression
  (pooled Pearson r) the pooled r below `min_agreement` after `min_requests` compared values.
The window (`window_seconds`) is what the status route shows. A failure stops routing to the candidate at once
on this server and ends the canary in the registry with the numbers, which every other server then follows on
its next poll.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from core import vocab
from registry.canary import CanarySpec, GuardRails
from registry.sequential import RailMonitor
from serving.deployment.store import Deployed

log = logging.getLogger(vocab.SERVING_LOG + ".canary")


def bucket(model: str, key: str) -> float:
    """Where a routing key falls in [0, 100): the same on every server, so a client stays on one side."""
    digest = hashlib.blake2b(f"{model}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000 / 100


class Window:
    """(time, error, seconds) of one side's recent answers."""

    def __init__(self) -> None:
        self._items: deque[tuple[float, bool, float]] = deque()

    def add(self, now: float, error: bool, seconds: float) -> None:
        self._items.append((now, error, seconds))

    def trim(self, since: float) -> None:
        while self._items and self._items[0][0] < since:
            self._items.popleft()

    def summary(self) -> dict[str, Any]:
        """Counts over the window (what the status route shows; the guard rails use RailMonitor)."""
        n = len(self._items)
        errors = sum(1 for _, e, _ in self._items if e)
        ok = [s for _, e, s in self._items if not e]
        p99 = float(np.percentile(ok, 99)) if ok else None
        out = {"requests": n, "errors": errors, "error_rate": errors / n if n else 0.0, "p99_s": p99}
        return out


@dataclass(frozen=True)
class Verdict:
    """A failed guard rail: which one, a sentence, and the numbers."""

    failed: str
    detail: str
    numbers: dict[str, Any]


def monitor_for(guards: GuardRails) -> RailMonitor:
    """The sequential tests behind `guards` (registry/sequential.py)."""
    return RailMonitor(guards.max_error_rate, guards.max_p99_ratio, guards.min_agreement, guards.min_requests)


# (metric, mean, compared, per-comparison values kept: the newest last) of the shadow on the candidate
Agreement = tuple[str, float, int, list[float]]


def judge(monitor: RailMonitor, agreement: Agreement | None, min_agreement: float) -> Verdict | None:
    """The first guard rail the candidate has failed, or None. Pooled Pearson r (regression) has no
    per-request values: it fails when r is below `min_agreement` over `min_requests` compared values."""
    failed = monitor.failure()
    if failed is not None:
        return Verdict(failed.failed, failed.detail, dict(failed.numbers))
    if agreement is not None and agreement[0] == "pearson":
        metric, mean, compared, _ = agreement
        if compared >= monitor.min_requests and mean < min_agreement:
            numbers = {"agreement_metric": metric, "agreement": round(mean, 4), "shadow_compared": compared}
            return Verdict("agreement", f"shadow {metric} {mean:.3f} < {min_agreement:g} over {compared} values",
                           numbers)  # fmt: skip
    return None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


AgreementFn = Callable[[], Agreement | None]
FailFn = Callable[["CanaryDeployment", Verdict], None]


@dataclass
class CanaryDeployment:
    """One running canary on this server: the candidate behind its own batcher, both sides' windows."""

    spec: CanarySpec
    deployed: Deployed
    on_fail: FailFn
    agreement: AgreementFn = lambda: None
    candidate: Window = field(default_factory=Window)
    production: Window = field(default_factory=Window)
    routed: dict[str, int] = field(default_factory=lambda: {"candidate": 0, "production": 0})
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    first_error_at: float | None = None  # monotonic: the candidate's first 5xx
    ended_at: float | None = None
    verdict: Verdict | None = None
    monitor: RailMonitor | None = None  # made from spec.guards; a change of guard rails starts it afresh
    _monitored: GuardRails | None = None
    _fed_comparisons: int = 0
    _judged_at: float = 0.0

    @property
    def version(self) -> str:
        return str(self.spec.version)

    def pick(self, production: Deployed, routing_key: str | None) -> Deployed:
        """The side a request of this model goes to (serving/dataplane.py asks for every request that does not
        name its version)."""
        if self.ended_at is not None:
            return production
        key = routing_key
        share = bucket(self.spec.model, key) if key else random.random() * 100
        if share < self.spec.percent:
            self.routed["candidate"] += 1
            return self.deployed
        self.routed["production"] += 1
        return production

    def record(self, version: str, production_version: str, status: int, seconds: float) -> None:
        """One answered request of this model; judge the guard rails when it was the candidate's."""
        if self.ended_at is not None:
            return
        now = time.monotonic()
        error = status >= 500
        monitor = self._monitor()
        if version == self.version:
            self.candidate.add(now, error, seconds)
            monitor.record(True, error, seconds)
            if error and self.first_error_at is None:
                self.first_error_at = now
            if error or now - self._judged_at > 0.05:  # the tests are cheap; agreement values arrive in batches
                self._judge(now)
        elif version == production_version:
            self.production.add(now, error, seconds)
            monitor.record(False, error, seconds)
            if error:
                self._judge(now)

    def _monitor(self) -> RailMonitor:
        if self.monitor is None or self._monitored != self.spec.guards:
            self.monitor, self._monitored, self._fed_comparisons = monitor_for(self.spec.guards), self.spec.guards, 0
        return self.monitor

    def _feed_agreement(self, monitor: RailMonitor) -> Agreement | None:
        """Hand the shadow comparisons made since the last call to the agreement rail."""
        agreement = self.agreement()
        if agreement is None or agreement[0] == "pearson":
            return agreement
        compared, values = agreement[2], agreement[3]
        new = min(compared - self._fed_comparisons, len(values))
        for value in values[len(values) - new :] if new > 0 else ():
            monitor.compared(value)
        self._fed_comparisons = compared
        return agreement

    def _judge(self, now: float) -> None:
        self._judged_at = now
        since = now - self.spec.guards.window_seconds
        self.candidate.trim(since)
        self.production.trim(since)
        monitor = self._monitor()
        verdict = judge(monitor, self._feed_agreement(monitor), self.spec.guards.min_agreement)
        if verdict is not None:
            self.verdict, self.ended_at = verdict, now
            log.error("canary of %s v%s failed its guard rail: %s", self.spec.model, self.version, verdict.detail)
            self.on_fail(self, verdict)

    def to_json(self) -> dict[str, Any]:
        since = time.monotonic() - self.spec.guards.window_seconds
        self.candidate.trim(since)
        self.production.trim(since)
        data: dict[str, Any] = {
            "model": self.spec.model, "candidate_version": self.version,
            "production_version": str(self.spec.production_version), "percent": self.spec.percent,
            "step": self.spec.step, "started_at": self.spec.started_at, "loaded_at": self.loaded_at.isoformat(),
            "guards": self.spec.guards.to_json(), "routed": dict(self.routed),
            "window": {"candidate": self.candidate.summary(), "production": self.production.summary()},
            "tests": self._monitor().to_json(),
            "state": "running" if self.ended_at is None else "rolled back",
        }  # fmt: skip
        if self.verdict is not None:
            data["verdict"] = {"failed": self.verdict.failed, "detail": self.verdict.detail, **self.verdict.numbers}
        if self.first_error_at is not None and self.ended_at is not None:
            data["first_error_to_rollback_s"] = round(self.ended_at - self.first_error_at, 4)
        return data
