"""The server's side of a canary release: route a share of a model's requests to the candidate, sticky per routing
key, watch both sides over a sliding window, and end the canary when a guard rail fails.

    kiln promote edgnet --version 4 --canary 10
    curl -H 'X-Kiln-Routing-Key: customer-42' -F image=@part.png 127.0.0.1:8080/v1/models/edgnet/predict
    curl -s 127.0.0.1:8080/v1/models/edgnet/canary | python -m json.tool

The split comes from the registry (registry/canary.py), so every server watching the model routes the same
share; a request with a routing key goes to the side its key hashes to (BLAKE2 of model and key, the same on
every server and after every restart), one without goes by chance. Each answer is recorded on its side: its
status (a 5xx is an error of the model, a 4xx is the client's) and its latency. Guard rails, checked over the
last `window_seconds` once the candidate has answered `min_requests` there:
- the candidate's 5xx share above `max_error_rate`, over the window or over its last `min_requests` answers;
- the candidate's p99 latency above `max_p99_ratio` x production's (once both sides have 100 answers or more:
  the p99 of fewer is their maximum);
- when the challenger being shadowed is the candidate, its agreement with production below `min_agreement`.
A failure stops routing to the candidate at once on this server and ends the canary in the registry with the
numbers, which every other server then follows on its next poll.
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

    def summary(self, recent: int = 0) -> dict[str, Any]:
        """Counts over the window; `recent` > 0 adds the error rate of the last `recent` answers, which reacts
        to a sudden breakage without waiting for it to outweigh a long healthy window."""
        n = len(self._items)
        errors = sum(1 for _, e, _ in self._items if e)
        ok = [s for _, e, s in self._items if not e]
        p99 = float(np.percentile(ok, 99)) if ok else None
        out = {"requests": n, "errors": errors, "error_rate": errors / n if n else 0.0, "p99_s": p99}
        if recent and n >= recent:
            out["recent_error_rate"] = sum(1 for i in range(n - recent, n) if self._items[i][1]) / recent
        return out


@dataclass(frozen=True)
class Verdict:
    """A failed guard rail: which one, a sentence, and the numbers."""

    failed: str
    detail: str
    numbers: dict[str, Any]


P99_MIN_REQUESTS = 100


def judge(
    guards: GuardRails, candidate: dict[str, Any], production: dict[str, Any], agreement: tuple[str, float, int] | None
) -> Verdict | None:
    """The first guard rail the candidate fails over the window, or None (also while it has too few requests)."""
    n = candidate["requests"]
    if n < guards.min_requests:
        return None
    numbers = {
        "candidate_requests": n, "candidate_errors": candidate["errors"],
        "candidate_error_rate": round(candidate["error_rate"], 4), "production_requests": production["requests"],
        "production_error_rate": round(production["error_rate"], 4),
        "candidate_p99_ms": _ms(candidate["p99_s"]), "production_p99_ms": _ms(production["p99_s"]),
    }  # fmt: skip
    if candidate["error_rate"] > guards.max_error_rate:
        return Verdict(
            "error_rate",
            f"candidate 5xx share {candidate['error_rate']:.3f} > {guards.max_error_rate:g} over {n} requests",
            numbers,
        )
    recent = candidate.get("recent_error_rate", 0.0)
    if recent > guards.max_error_rate:
        numbers["candidate_recent_error_rate"] = round(recent, 4)
        return Verdict(
            "error_rate",
            f"candidate 5xx share {recent:.3f} > {guards.max_error_rate:g} over its last {guards.min_requests} answers",
            numbers,
        )
    cand_p99, prod_p99 = candidate["p99_s"], production["p99_s"]
    enough = max(guards.min_requests, P99_MIN_REQUESTS)  # a p99 of fewer answers is their maximum: noise
    if cand_p99 is not None and prod_p99 and n >= enough and production["requests"] >= enough:
        ratio = cand_p99 / prod_p99
        if ratio > guards.max_p99_ratio:
            numbers["p99_ratio"] = round(ratio, 3)
            return Verdict(
                "p99", f"candidate p99 {cand_p99 * 1000:.1f} ms is {ratio:.2f}x production's {prod_p99 * 1000:.1f} ms "
                f"(limit {guards.max_p99_ratio:g}x)", numbers,
            )  # fmt: skip
    if agreement is not None:
        metric, mean, compared = agreement
        if compared >= guards.min_requests and mean < guards.min_agreement:
            numbers.update(agreement_metric=metric, agreement=round(mean, 4), shadow_compared=compared)
            return Verdict(
                "agreement", f"shadow {metric} {mean:.3f} < {guards.min_agreement:g} over {compared} requests", numbers
            )
    return None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


AgreementFn = Callable[[], tuple[str, float, int] | None]
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
        if version == self.version:
            self.candidate.add(now, error, seconds)
            if error and self.first_error_at is None:
                self.first_error_at = now
            if error or now - self._judged_at > 0.25:  # latency judged a few times a second, errors at once
                self._judge(now)
        elif version == production_version:
            self.production.add(now, error, seconds)

    def _judge(self, now: float) -> None:
        self._judged_at = now
        since = now - self.spec.guards.window_seconds
        self.candidate.trim(since)
        self.production.trim(since)
        guards = self.spec.guards
        verdict = judge(
            guards, self.candidate.summary(guards.min_requests), self.production.summary(), self.agreement()
        )
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
            "state": "running" if self.ended_at is None else "rolled back",
        }  # fmt: skip
        if self.verdict is not None:
            data["verdict"] = {"failed": self.verdict.failed, "detail": self.verdict.detail, **self.verdict.numbers}
        if self.first_error_at is not None and self.ended_at is not None:
            data["first_error_to_rollback_s"] = round(self.ended_at - self.first_error_at, 4)
        return data
