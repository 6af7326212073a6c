"""Anytime-valid sequential tests for canary guard rails: check after every request, still one false-alarm budget.

    python -c "from registry.sequential import ArmTest; t = ArmTest(); [t.add(True, 0.1) for _ in range(5)]; \
print(t.e_value, t.rejects(0.0025))"

Re-checking "error rate > 5%" or "p99 ratio > 2" after every request is a test run thousands of times: under
no difference at all it fails sooner or later. Each test here is an e-process instead: a nonnegative
(super)martingale under the null that starts at 1, so by Ville's inequality the chance that it *ever* reaches
1/alpha, however long the canary runs and however often it is checked, is at most alpha. A guard rail fails the
first time its e-value reaches 1/alpha; with several rails each gets alpha / rails (a union bound), which keeps
a canary's false-rollback probability at most alpha over its whole life.

- `ArmTest`: is the candidate's rate of some event (a 5xx, a slow answer) higher than production's? Each event
  lands on the candidate with probability `share` (its share of requests) when the rates are equal, and with
  odds theta times higher when the candidate's rate is theta times production's. The e-value is a mixture over
  a grid of theta > 1 of the likelihood ratios against theta = 1; events of a candidate no worse than production
  make it shrink. Only events count, so it is robust to load: both sides see the same load at the same time.
- `MeanTest`: is the mean of values in [0, 1] (per-request agreement, a 5xx indicator) below (or above) a bound?
  A betting martingale (Waudby-Smith and Ramdas 2023): capital times (1 + lambda (bound - x)) per value, with a
  predictable bet lambda sized from the running mean and variance (aGRAPA), capped at half the largest safe bet.
Pure numpy, no I/O: the server (serving/rollout/canary.py) feeds requests in, the decision bench
(bench/decisions.py) feeds simulated ones, and both see the same decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Odds ratios the ArmTest mixes over: from a 25% higher event rate (slow to prove) to 100x (proved in a few events).
THETAS = (1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0)


def threshold(alpha: float) -> float:
    """The e-value at which a test of level `alpha` rejects (Ville's inequality)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return 1 / alpha


@dataclass
class ArmTest:
    """H0: the candidate's per-request event rate is at most production's. One `add` per event."""

    thetas: tuple[float, ...] = THETAS
    events: int = 0
    candidate_events: int = 0
    _log_lr: np.ndarray = field(default_factory=lambda: np.zeros(len(THETAS)))
    _e: float = 1.0

    def add(self, on_candidate: bool, share: float) -> None:
        """One event, on the candidate's side or production's, when the candidate answered `share` of requests."""
        if not 0 < share < 1:
            return  # a side with no traffic says nothing about which side events prefer
        theta = np.asarray(self.thetas)
        alt = theta * share / (theta * share + 1 - share)  # P(event on the candidate | event) under theta
        self._log_lr += np.log(alt / share) if on_candidate else np.log((1 - alt) / (1 - share))
        self.events += 1
        self.candidate_events += int(on_candidate)
        self._e = float(np.mean(np.exp(np.minimum(self._log_lr, 700.0))))

    @property
    def e_value(self) -> float:
        return self._e

    def rejects(self, alpha: float) -> bool:
        return self.e_value >= threshold(alpha)


@dataclass
class MeanTest:
    """Values in [0, 1]. direction "below": H0 mean >= bound (fails a candidate whose mean falls below it);
    "above": H0 mean <= bound. One `add` per value."""

    bound: float
    direction: str = "below"
    n: int = 0
    total: float = 0.0
    squares: float = 0.0
    log_capital: float = 0.0

    def __post_init__(self) -> None:
        if self.direction not in ("below", "above"):
            raise ValueError(f"direction must be 'below' or 'above', got {self.direction!r}")
        if not 0 < self.bound < 1:
            raise ValueError(f"bound must be in (0, 1), got {self.bound!r}")

    def _gap(self, x: float) -> float:
        """How far `x` is on the alternative's side of the bound (positive: evidence against H0)."""
        return self.bound - x if self.direction == "below" else x - self.bound

    def _bet(self) -> float:
        # before any value, assume the mean sits on the bound with the largest variance: a small first bet
        prior = 2.0
        mean = (self.total + prior * self.bound) / (self.n + prior)
        var = (self.squares + prior * 0.25) / (self.n + prior) - mean**2
        gap = self._gap(mean)
        if gap <= 0:
            return 0.0
        most = 1 / (self.bound if self.direction == "below" else 1 - self.bound)  # capital stays positive
        return min(gap / (max(var, 1e-6) + gap**2), 0.5 * most)

    def add(self, x: float) -> None:
        x = min(max(float(x), 0.0), 1.0)
        lam = self._bet()
        self.log_capital += math.log1p(lam * self._gap(x))
        self.n += 1
        self.total += x
        self.squares += x * x

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def e_value(self) -> float:
        return math.exp(min(self.log_capital, 700.0))

    def rejects(self, alpha: float) -> bool:
        return self.e_value >= threshold(alpha)


# --- the canary's guard rails, as one monitor ------------------------------------------------------------------

FALSE_ROLLBACK = 0.01  # a canary's chance of being rolled back when the candidate is as good as production
RAILS = ("error_rate", "error_ceiling", "p99", "agreement")
SLOW_QUANTILE = 99.0  # a "slow" answer is one above production's running p99 (the candidate's divided by the ratio)
SLOW_MIN_PRODUCTION = 100  # production answers before its p99 is known (the p99 of fewer is their maximum)
SLOW_WINDOW = 2000  # production latencies the running p99 is taken over
SLOW_REFRESH = 50  # production answers between refreshes of the p99


@dataclass(frozen=True)
class RailFailure:
    """A failed guard rail: which one, a sentence, and the numbers."""

    failed: str  # one of RAILS
    detail: str
    numbers: dict[str, float | int]


@dataclass
class RailMonitor:
    """Every guard rail of one canary, fed each answered request and each shadow comparison; `failure()` names the
    first rail whose e-value reached 1 / (alpha / len(RAILS)), once the candidate has `min_requests` answers
    (and the agreement rail `min_requests` comparisons). Arguments mirror registry.canary.GuardRails:
    - max_error_rate: the candidate's 5xx share is proved above this (an absolute ceiling);
    - the candidate's 5xx rate is proved above production's (no ceiling needed: more 5xx than production is bad);
    - max_p99_ratio: answers slower than production's running p99 come more often from the candidate than its
      share, after dividing its latencies by this ratio (so "the candidate's tail is more than ratio x
      production's");
    - min_agreement: the mean shadow agreement of the candidate with production is proved below this."""

    max_error_rate: float = 0.05
    max_p99_ratio: float = 1.2
    min_agreement: float = 0.8
    min_requests: int = 20
    alpha: float = FALSE_ROLLBACK
    candidate_requests: int = 0
    production_requests: int = 0
    errors: ArmTest = field(default_factory=ArmTest)
    slow: ArmTest = field(default_factory=ArmTest)
    ceiling: MeanTest = field(init=False)
    agreement: MeanTest | None = field(init=False)
    slow_above_s: float | None = None  # production's running p99 (seconds), once known
    _latencies: list[float] = field(default_factory=list)
    _since_refresh: int = 0

    def __post_init__(self) -> None:
        self.ceiling = MeanTest(min(max(self.max_error_rate, 1e-6), 1 - 1e-6), "above")
        self.agreement = MeanTest(self.min_agreement, "below") if 0 < self.min_agreement < 1 else None

    @property
    def rail_alpha(self) -> float:
        return self.alpha / len(RAILS)

    def record(self, candidate: bool, error: bool, seconds: float) -> None:
        """One answered request of the model: on the candidate's side or production's, a 5xx or not."""
        total = self.candidate_requests + self.production_requests
        share = self.candidate_requests / total if total else 0.0
        if error:
            self.errors.add(candidate, share)
        elif self.slow_above_s is not None:
            scaled = seconds / self.max_p99_ratio if candidate else seconds
            if scaled > self.slow_above_s:
                self.slow.add(candidate, share)
        if candidate:
            self.candidate_requests += 1
            self.ceiling.add(1.0 if error else 0.0)
        else:
            self.production_requests += 1
            if not error:
                self._production_latency(seconds)

    def _production_latency(self, seconds: float) -> None:
        self._latencies.append(seconds)
        if len(self._latencies) > 2 * SLOW_WINDOW:
            del self._latencies[:SLOW_WINDOW]
        self._since_refresh += 1
        if len(self._latencies) >= SLOW_MIN_PRODUCTION and (
            self.slow_above_s is None or self._since_refresh >= SLOW_REFRESH
        ):
            self.slow_above_s = float(np.percentile(self._latencies[-SLOW_WINDOW:], SLOW_QUANTILE))
            self._since_refresh = 0

    def compared(self, agreement: float) -> None:
        """One shadow comparison of the candidate's answer with production's (agreement in [0, 1])."""
        if self.agreement is not None and math.isfinite(agreement):
            self.agreement.add(agreement)

    def failure(self) -> RailFailure | None:
        """The first guard rail the candidate has failed, or None."""
        if self.candidate_requests < self.min_requests:
            return None
        level = self.rail_alpha
        numbers: dict[str, float | int] = {
            "candidate_requests": self.candidate_requests, "production_requests": self.production_requests,
            "alpha": self.alpha,
        }  # fmt: skip
        if self.errors.rejects(level):
            numbers.update(candidate_errors=self.errors.candidate_events,
                           production_errors=self.errors.events - self.errors.candidate_events,
                           e_value=round(self.errors.e_value, 1))  # fmt: skip
            share = self.candidate_requests / (self.candidate_requests + self.production_requests)
            return RailFailure("error_rate", f"{self.errors.candidate_events} of {self.errors.events} 5xx answers "
                               f"came from the candidate, which answered {share:.1%} of requests", numbers)  # fmt: skip
        if self.ceiling.rejects(level):
            numbers.update(candidate_error_rate=round(self.ceiling.mean, 4), e_value=round(self.ceiling.e_value, 1))
            return RailFailure("error_ceiling", f"candidate 5xx share {self.ceiling.mean:.3f} is above "
                               f"{self.max_error_rate:g} over {self.ceiling.n} requests", numbers)  # fmt: skip
        if self.slow.rejects(level):
            assert self.slow_above_s is not None
            numbers.update(slow_candidate=self.slow.candidate_events,
                           slow_production=self.slow.events - self.slow.candidate_events,
                           production_p99_ms=round(self.slow_above_s * 1000, 3),
                           e_value=round(self.slow.e_value, 1))  # fmt: skip
            return RailFailure("p99", f"{self.slow.candidate_events} of {self.slow.events} answers above production's "
                               f"p99 ({self.slow_above_s * 1000:.1f} ms; the candidate's divided by "
                               f"{self.max_p99_ratio:g}) came from the candidate", numbers)  # fmt: skip
        agreement = self.agreement
        if agreement is not None and agreement.n >= self.min_requests and agreement.rejects(level):
            numbers.update(agreement=round(agreement.mean, 4), shadow_compared=agreement.n,
                           e_value=round(agreement.e_value, 1))  # fmt: skip
            return RailFailure("agreement", f"shadow agreement {agreement.mean:.3f} is below "
                               f"{self.min_agreement:g} over {agreement.n} comparisons", numbers)  # fmt: skip
        return None

    def to_json(self) -> dict[str, float | int | None]:
        """The e-values and counts behind each rail, for the canary's status route."""
        return {
            "alpha": self.alpha, "rail_alpha": self.rail_alpha, "reject_at_e_value": threshold(self.rail_alpha),
            "error_rate_e_value": round(self.errors.e_value, 4),
            "error_ceiling_e_value": round(self.ceiling.e_value, 4),
            "p99_e_value": round(self.slow.e_value, 4),
            "agreement_e_value": None if self.agreement is None else round(self.agreement.e_value, 4),
            "shadow_compared": 0 if self.agreement is None else self.agreement.n,
            "min_comparisons": self.min_requests,  # the agreement rail judges only after this many
            "production_p99_ms": None if self.slow_above_s is None else round(self.slow_above_s * 1000, 3),
        }  # fmt: skip
