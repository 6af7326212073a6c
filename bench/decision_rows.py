"""One row of the decision bench (bench/decisions.py): a measured miss or false-alarm rate with its interval.

    python -c "from bench.decision_rows import measured; print(measured('gate', 'false promotion', 400, 7, \
'false_alarm', 0.05))"

Every simulation of a decision kiln makes returns rows of the same shape, whichever helper wrote it:
{decision, measure, cases, misses, false_alarms, rate, ci_low, ci_high, target, met, detail}. `rate` is the
measured share (misses / cases for a miss rate or power, false_alarms / cases for a false-alarm rate); the
interval is the exact two-sided 95% Clopper-Pearson interval of that share. `met` says whether the target holds
within Monte Carlo error: a false-alarm or miss rate meets "<= x" when its interval reaches x (the exact
one-sided binomial test at 2.5% does not reject "the true rate is at most x"), a power meets ">= x" when its
interval reaches x. A test of exactly level alpha measures alpha +- sampling noise, so the point estimate alone
would call it a miss half the time; the full-size run (`bench/decisions.py` without --quick) makes the
intervals narrow. `detail` carries extra numbers (requests to rollback, epochs saved, the rate before a fix).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

CI_LEVEL = 0.95


@dataclass(frozen=True)
class Row:
    decision: str  # "significance gate", "canary guard rails", ...
    measure: str  # what the rate is: "false promotion, 5 folds, no difference"
    cases: int
    misses: int
    false_alarms: int
    rate: float
    ci_low: float
    ci_high: float
    target: str  # "<= 0.05", ">= 0.9", "reported"
    met: bool | None  # None when the issue only asks for the figure to be reported
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def clopper_pearson(k: int, n: int, level: float = CI_LEVEL) -> tuple[float, float]:
    """Exact two-sided interval of a binomial share k/n."""
    from scipy.stats import beta

    if n <= 0:
        return 0.0, 1.0
    tail = (1 - level) / 2
    low = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - tail, k + 1, n - k))
    return low, high


def measured(
    decision: str,
    measure: str,
    cases: int,
    count: int,
    kind: str,
    limit: float | None,
    detail: dict[str, Any] | None = None,
) -> Row:
    """A row from `count` events out of `cases`. `kind`: "false_alarm" (target rate <= limit), "miss" (target miss
    rate <= limit), "power" (count = detections; target power >= limit) or "report" (no target)."""
    if kind not in ("false_alarm", "miss", "power", "report"):
        raise ValueError(f"unknown row kind {kind!r}; known: false_alarm, miss, power, report")
    rate = count / cases if cases else 0.0
    low, high = clopper_pearson(count, cases)
    if kind == "power":
        misses, alarms, target = cases - count, 0, f">= {limit:g}" if limit is not None else "reported"
        met = None if limit is None else high >= limit
    elif kind == "miss":
        misses, alarms, target = count, 0, f"<= {limit:g}" if limit is not None else "reported"
        met = None if limit is None else low <= limit
    elif kind == "false_alarm":
        misses, alarms, target = 0, count, f"<= {limit:g}" if limit is not None else "reported"
        met = None if limit is None else low <= limit
    else:
        misses, alarms, target, met = 0, 0, "reported", None
    return Row(decision, measure, cases, misses, alarms, rate, low, high, target, met, dict(detail or {}))
