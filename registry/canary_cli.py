"""The canary flags of `kiln promote` and the canary side of `kiln rollback` and `kiln history`.

    kiln promote edgnet --version 4 --canary 10 --max-error-rate 0.02 --min-requests 50
    kiln promote edgnet --canary 50
    kiln promote edgnet --finish-canary
    kiln rollback edgnet

The work is in registry/canary.py; this module only turns flags into its calls and its results into lines.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from registry.errors import InvalidRequestError

if TYPE_CHECKING:  # mlflow is imported when a command runs: `kiln promote --help` stays instant
    from registry.canary import CanarySpec
    from registry.history import AliasEvent
    from registry.promotion import PromotionResult

F = TypeVar("F", bound=Callable[..., Any])

# Guard-rail flags. Their defaults belong to registry.canary.GuardRails (which imports mlflow, too slow to load
# for --help); a canary's start prints the rails in effect. tests/registry/test_parity.py keeps these names equal.
GUARD_FLAGS = {
    "max_error_rate": ("--max-error-rate", float, "Canary: end it once its 5xx share is proved above this."),
    "max_p99_ratio": (
        "--max-p99-ratio",
        float,
        "Canary: end it once its latency tail is proved above this multiple of production's.",
    ),
    "min_agreement": ("--min-agreement", float, "Canary: end it once its mean shadow agreement is proved below this."),
    "min_requests": ("--min-requests", int, "Canary: answers (and shadow comparisons) before guard rails judge."),
    "window_seconds": ("--window-seconds", float, "Canary: the window of counts its status route shows."),
}


def canary_options(fn: F) -> F:
    """Add --canary, --finish-canary and the guard-rail flags; the guard rails arrive as one `guards` dict."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["guards"] = {k: kwargs.pop(k) for k in GUARD_FLAGS if kwargs.get(k) is not None}
        for k in GUARD_FLAGS:
            kwargs.pop(k, None)
        return fn(*args, **kwargs)

    for name, (flag, kind, text) in reversed(GUARD_FLAGS.items()):
        wrapper = click.option(flag, name, type=kind, help=text)(wrapper)
    wrapper = click.option("--finish-canary", is_flag=True, help="Promote the running canary's version (gated).")(
        wrapper
    )
    wrapper = click.option(
        "--canary",
        type=click.FloatRange(0, 100, min_open=True, max_open=True),
        help="Send this percent of the traffic to --version first; without --version, change the running canary's.",
    )(wrapper)
    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class CanaryOutcome:
    """What a canary command did: a start or step (spec), or a finish (promotion)."""

    model: str
    action: str  # "start", "step" or "finish"
    spec: CanarySpec | None = None
    promotion: PromotionResult | None = None


def canary_command(
    model: str,
    version: str | None,
    alias: str,
    percent: float | None,
    finish: bool,
    guards: dict[str, Any],
    reason: str,
    gates: dict[str, Any],
) -> CanaryOutcome:
    from registry.canary import read_canary, start_canary
    from registry.promotion import finish_canary

    if finish and percent is not None:
        raise InvalidRequestError("give --canary PERCENT or --finish-canary, not both")
    if finish:
        if version is not None:
            raise InvalidRequestError("--finish-canary promotes the running canary's version; drop --version")
        return CanaryOutcome(model, "finish", promotion=finish_canary(model, reason=reason, **gates))
    assert percent is not None
    from mlflow import MlflowClient

    running = read_canary(MlflowClient(), model)
    spec = start_canary(model, version=version, percent=percent, alias=alias, guards=guards, reason=reason)
    return CanaryOutcome(model, "step" if running is not None else "start", spec=spec)


def describe_canary(outcome: CanaryOutcome) -> list[str]:
    if outcome.promotion is not None:
        p = outcome.promotion
        return [f"canary finished: {p.model} {p.alias} v{p.previous_version} -> v{p.version}"] + [
            f"  {'ok  ' if c.passed else 'FAIL'} {c.gate}: {c.detail}" for c in p.checks
        ]
    spec = outcome.spec
    assert spec is not None
    g = spec.guards
    verb = "canary started" if outcome.action == "start" else f"canary step {spec.step}"
    return [
        f"{verb}: {spec.model} v{spec.version} gets {spec.percent:g}% of the traffic, {spec.alias} "
        f"v{spec.production_version} the rest",
        f"  guard rails over {g.window_seconds:g}s once {g.min_requests} requests: 5xx share <= {g.max_error_rate:g}, "
        f"p99 <= {g.max_p99_ratio:g}x production's, shadow agreement >= {g.min_agreement:g}",
        "  servers watching the model apply it on their next poll; send X-Kiln-Routing-Key for sticky routing",
    ]


def canary_columns(event: AliasEvent) -> tuple[str, str]:
    """The ACTION and METRIC columns of `kiln history` for a canary event."""
    details = event.canary or {}
    action = f"{event.action} {details.get('percent', 0):g}%"
    failed = details.get("failed")
    numbers = details.get("numbers") or {}
    shown = " ".join(f"{k}={_short(v)}" for k, v in numbers.items() if not isinstance(v, dict | list))
    return action, (f"{failed}: {shown}" if failed else shown)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
