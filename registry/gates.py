"""Promotion gates: which metric decides, which way is better, and the checks a candidate must pass.

    python -c "from registry.gates import infer_mode; print(infer_mode('val_loss'))"   # -> min

Gates are pure functions of a `GateInput`, registered with `@gate(name)` and run in registration order.
Each returns a `GateCheck` (passed or not, with a sentence that carries both numbers) or None when it
does not apply (no --min given, no version holding the alias yet). Nothing here talks to MLflow.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from core import vocab
from registry.checks import GateCheck as GateCheck
from registry.errors import InvalidRequestError

# mode -> "is the first value at least as good as the second". Ties pass: an equal model may replace another.
MODES: dict[str, Callable[[float, float], bool]] = {"max": operator.ge, "min": operator.le}

# A metric whose name ends with one of these is better when lower; every other metric when higher.
LOWER_IS_BETTER_SUFFIXES = ("loss", "error", "mse", "mae", "rmse", "mape", "seconds", "latency")

# Tags by which training names the metric that decides: on the version, its source run, or the registered model.
METRIC_HINT_TAG = vocab.METRIC
MODE_HINT_TAG = vocab.MODE


@dataclass(frozen=True)
class MetricChoice:
    """The metric a promotion is judged by, the better direction, and where each came from."""

    metric: str
    mode: str  # "max" or "min"
    source: str  # "--metric", or where the hint was: "version tag kiln.metric", "run tag ...", "model tag ..."


@dataclass(frozen=True)
class GateInput:
    model: str
    alias: str
    version: int  # the candidate
    metric: str
    mode: str
    value: float | None  # the candidate's metric; None when its run lacks it (only reached with --force)
    min_value: float | None  # --min: the candidate's metric must be at least this
    max_value: float | None  # --max: ... at most this
    current_version: int | None  # the version holding the alias now, if any
    current_value: float | None  # its metric; None when its run lacks it


GateFn = Callable[[GateInput], GateCheck | None]
GATES: dict[str, GateFn] = {}


def gate(name: str) -> Callable[[GateFn], GateFn]:
    def register(fn: GateFn) -> GateFn:
        if name in GATES:
            raise ValueError(f"gate {name!r} is registered twice")
        GATES[name] = fn
        return fn

    return register


def run_gates(inp: GateInput) -> tuple[GateCheck, ...]:
    checks = (fn(inp) for fn in GATES.values())
    return tuple(check for check in checks if check is not None)


def fmt(value: float) -> str:
    return f"{value:.6g}"


def better_word(mode: str) -> str:
    return "higher is better" if mode == "max" else "lower is better"


@gate("logged")
def _logged(inp: GateInput) -> GateCheck | None:
    if inp.value is not None:
        return None
    return GateCheck("logged", False, f"candidate v{inp.version} has no {inp.metric} on its source run")


@gate("min")
def _at_least(inp: GateInput) -> GateCheck | None:
    if inp.min_value is None or inp.value is None:
        return None
    if inp.value >= inp.min_value:
        return GateCheck("min", True, f"{inp.metric} {fmt(inp.value)} >= --min {fmt(inp.min_value)}")
    return GateCheck("min", False, f"{inp.metric} {fmt(inp.value)} is below --min {fmt(inp.min_value)}")


@gate("max")
def _at_most(inp: GateInput) -> GateCheck | None:
    if inp.max_value is None or inp.value is None:
        return None
    if inp.value <= inp.max_value:
        return GateCheck("max", True, f"{inp.metric} {fmt(inp.value)} <= --max {fmt(inp.max_value)}")
    return GateCheck("max", False, f"{inp.metric} {fmt(inp.value)} is above --max {fmt(inp.max_value)}")


@gate("current")
def _not_worse_than_current(inp: GateInput) -> GateCheck | None:
    if inp.current_version is None or inp.current_version == inp.version or inp.value is None:
        return None
    holder = f"{inp.alias} v{inp.current_version}"
    if inp.current_value is None:
        return GateCheck("current", False, f"cannot compare with {holder}: its source run has no {inp.metric}")
    candidate, current = fmt(inp.value), fmt(inp.current_value)
    if MODES[inp.mode](inp.value, inp.current_value):
        verdict = f"{inp.metric} {candidate} vs {holder}'s {current} ({better_word(inp.mode)})"
        return GateCheck("current", True, verdict)
    verdict = f"{inp.metric} {candidate} is worse than {holder}'s {current} ({better_word(inp.mode)})"
    return GateCheck("current", False, verdict)


def infer_mode(metric: str) -> str:
    """Lower is better for losses, errors and times; higher for everything else (IoU, mAP, accuracy, AUC)."""
    return "min" if metric.lower().endswith(LOWER_IS_BETTER_SUFFIXES) else "max"


def check_mode(mode: str, where: str) -> str:
    if mode not in MODES:
        raise InvalidRequestError(f"{where} mode {mode!r} is not one of {sorted(MODES)}")
    return mode


def choose_metric(
    metric: str | None, mode: str | None, hints: Sequence[tuple[str, Mapping[str, str]]]
) -> MetricChoice | None:
    """Pick the deciding metric: --metric, else the first `kiln.metric` tag in `hints`; None if none.

    `hints` are (where, tags) pairs, most specific first: the version's tags, its source run's tags (which
    training sets), the registered model's tags. The mode is --mode, else the `kiln.mode` tag beside the
    hint that names the chosen metric, else it is inferred from the metric's name.
    """
    if mode is not None:
        check_mode(mode, "--mode")
    for where, tags in hints:
        hint = tags.get(METRIC_HINT_TAG)
        if not hint or (metric is not None and metric != hint):
            continue
        hinted_mode = tags.get(MODE_HINT_TAG)
        if mode is None and hinted_mode:
            mode = check_mode(hinted_mode, f"{where} {MODE_HINT_TAG}")
        source = "--metric" if metric is not None else f"{where} {METRIC_HINT_TAG}"
        return MetricChoice(hint, mode or infer_mode(hint), source)
    if metric is None:
        return None
    return MetricChoice(metric, mode or infer_mode(metric), "--metric")
