"""`kiln advise RUN_ID`: read a run's curves, params and system metrics, say what happened and what to try next.

    kiln advise 3f2a...            # findings, evidence, `-P` overrides and a ready `mlflow run` line
    kiln advise 3f2a... --json     # the same as a list of findings
    python -c "from experiments.advise import advise; print(advise('3f2a...').markdown())"

Each rule is a function registered with `@rule(kind)`; it looks at one `RunView` and returns a `Finding`
(evidence with numbers and epochs, suggested overrides) or None. The thresholds are the fields of
`Thresholds`; docs/experiments.md explains every rule. The advice is logged to the run as `advice.md` and
summarised in the tag `kiln.advice`.
"""

from __future__ import annotations

import math
import shlex
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient

from core import vocab
from experiments.runview import STOPPED_BY_TAG, RunView, Series, finite, load_run

ADVICE_TAG = vocab.ADVICE
ADVICE_FILE = "advice.md"
MLPROJECT = Path(__file__).resolve().parents[1] / "MLproject"
# Params that say nothing about the training recipe; left out of command lines and run comparisons.
IGNORED_PARAMS = frozenset({"resume", "model_name", "data", "device", "run_name", "config", "hyp"})


@dataclass(frozen=True)
class Thresholds:
    min_epochs: int = 4  # curves shorter than this are not judged (only NaN/divergence and data_bound are)
    spike_ratio: float = 2.0  # a train loss at least this many times the previous epoch's is a spike
    rise_ratio: float = 1.0  # a final train loss above first * this means the loss went up overall
    overfit_rise: float = 0.10  # val loss ending this fraction above its minimum ...
    overfit_after: int = 2  # ... at least this many epochs after the minimum, while train loss falls
    overfit_train_drop: float = 0.05  # train loss must fall by at least this fraction after the val minimum
    zigzag: float = 0.35  # share of epochs whose train loss rose: the optimiser overshoots (lr too high)
    steady: float = 0.8  # share of epochs whose train loss fell, for a steady descent
    slow_drop: float = 0.30  # total relative train-loss drop below this is slow ...
    linear_ratio: float = 0.5  # ... and still linear when the last third falls at >= this * the first third's rate
    underfit_drop: float = 0.50  # train loss fell less than this fraction overall ...
    flat_tail: float = 0.05  # ... and its last third fell less than this fraction of the whole drop ...
    gap: float = 0.15  # ... and val loss is within this fraction of train loss: it cannot fit the train set
    tail_share: float = 0.30  # the "end" of a run: this share of its epochs, at least 3
    plateau_gain: float = 0.005  # the end gained less than this share of the run's total gain: a plateau
    improving_gain: float = 0.10  # the end gained at least this share, best in the last 2 epochs: still improving
    trend_t: float = 2.0  # t-statistic of the metric's slope over the last window: a stopped run still improved
    noisy_flips: float = 0.5  # share of direction changes in the validation metric ...
    noisy_amplitude: float = 0.25  # ... with residuals around a 3-epoch mean above this share of its range
    gpu_busy: float = 40.0  # mean GPU utilisation (%) below this: the GPU waits for data
    cpu_busy: float = 30.0  # mean CPU utilisation (%) below this on a CPU run: the loop waits for I/O


T = Thresholds()


@dataclass(frozen=True)
class Finding:
    kind: str
    summary: str  # one sentence with the numbers
    evidence: dict[str, Any]  # the numbers and epochs the rule looked at
    overrides: dict[str, str] = field(default_factory=dict)  # -P name=value
    command: str = ""  # a ready `mlflow run` line with the overrides
    extra: str = ""  # another step worth taking (a kiln command)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """Best against worst run of the experiment by the ranking metric, and what differed between them."""

    metric: str
    mode: str
    runs: int
    best: tuple[str, float]  # run id, value
    worst: tuple[str, float]
    changed: dict[str, tuple[str, str]]  # param -> (worst's value, best's value)
    correlations: dict[str, tuple[float, int]]  # numeric param -> (Spearman rho with the metric, n)
    rank: int | None  # this run's place, 1 = best

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Advice:
    run_id: str
    headline: str
    findings: list[Finding]
    comparison: Comparison | None

    def kinds(self) -> list[str]:
        return [f.kind for f in self.findings]

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "headline": self.headline,
            "findings": [f.to_json() for f in self.findings],
            "comparison": self.comparison.to_json() if self.comparison else None,
        }

    def markdown(self) -> str:
        lines = [f"# Advice for run {self.run_id}", "", self.headline, ""]
        if not self.findings:
            lines += ["No problem found: the curves pass every rule (see docs/experiments.md).", ""]
        for f in self.findings:
            lines += [f"## {f.kind}", "", f.summary, ""]
            if f.overrides:
                lines += ["Try: " + " ".join(f"-P {k}={v}" for k, v in f.overrides.items()), ""]
            if f.command:
                lines += ["```", f.command, "```", ""]
            if f.extra:
                lines += [f.extra, ""]
        if self.comparison is not None:
            lines += ["## Across the experiment", "", *describe_comparison(self.comparison), ""]
        return "\n".join(lines)


Rule = Callable[[RunView], Finding | None]
RULES: dict[str, Rule] = {}


def rule(kind: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        if kind in RULES:
            raise ValueError(f"advisor rule {kind!r} is registered twice")
        RULES[kind] = fn
        return fn

    return register


# ---------------------------------------------------------------- helpers over curves


def _vals(series: Series) -> list[float]:
    return [v for _, v in series]


def _rise_share(values: Sequence[float]) -> float:
    steps = list(zip(values, values[1:], strict=False))
    return sum(b > a for a, b in steps) / max(len(steps), 1)


def _tail_len(n: int) -> int:
    return max(3, math.ceil(T.tail_share * n))


def _better(mode: str, a: float, b: float) -> bool:
    return a > b if mode == "max" else a < b


def _best_index(values: Sequence[float], mode: str) -> int:
    best = 0
    for i, v in enumerate(values):
        if _better(mode, v, values[best]):
            best = i
    return best


def _gain(values: Sequence[float], mode: str) -> float:
    """How far the best value moved from the first, in the improving direction (>= 0)."""
    best = max(values) if mode == "max" else min(values)
    return abs(best - values[0])


def _slope_t(values: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope per step and its t-statistic (inf when the points lie on a line)."""
    n = len(values)
    xs = range(n)
    mx, my = (n - 1) / 2, statistics.fmean(values)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, values, strict=True)) / sxx
    resid = [y - (my + slope * (x - mx)) for x, y in zip(xs, values, strict=True)]
    if n < 3:
        return slope, 0.0
    se = math.sqrt(sum(r * r for r in resid) / (n - 2) / sxx)
    return slope, (slope / se if se > 0 else math.copysign(math.inf, slope) if slope else 0.0)


def _budget(view: RunView) -> int | None:
    knob = view.knob("epochs")
    return int(knob[1]) if knob else None


def _stopped_before_budget(view: RunView) -> bool:
    budget = _budget(view)
    return budget is not None and view.epochs_run() < budget


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _step_name(view: RunView, step: int) -> str:
    return f"{view.unit} {step}"


# ---------------------------------------------------------------- overrides and command lines


def _as_param(name: str, value: float) -> str:
    integral = name in ("epochs", "n_estimators", "patience", "early_stopping_rounds", "batch_size", "batch",
                        "workers", "num_samples", "max_depth")  # fmt: skip
    return str(max(1, int(round(value)))) if integral else f"{value:.3g}"


def scaled(view: RunView, knob: str, factor: float) -> dict[str, str]:
    """{param: value * factor} for a knob the run has; {} when the family has no such knob."""
    found = view.knob(knob)
    if found is None:
        return {}
    name, value = found
    return {name: _as_param(name, value * factor)}


def setting(view: RunView, knob: str, value: float) -> dict[str, str]:
    found = view.knob(knob)
    return {found[0]: _as_param(found[0], value)} if found else {}


def entry_point(view: RunView) -> str | None:
    tags = view.tags
    return (
        tags.get("mlflow.project.entryPoint")
        or tags.get(vocab.PRESET)
        or tags.get(vocab.VARIANT)
        or tags.get(vocab.FAMILY)
    )


def _entry_params(entry: str) -> dict[str, Any] | None:
    try:
        project = yaml.safe_load(MLPROJECT.read_text())
    except (OSError, yaml.YAMLError):
        return None
    params = (project or {}).get("entry_points", {}).get(entry, {}).get("parameters")
    return params if isinstance(params, dict) else None


def command_line(view: RunView, overrides: Mapping[str, str]) -> str:
    """`mlflow run . -e ENTRY` with the run's recipe params (those its entry point takes) and the overrides."""
    entry = entry_point(view)
    if entry is None:
        return ""
    declared = _entry_params(entry)
    params: dict[str, str] = {}
    if declared is not None:
        for name, spec in declared.items():
            value = view.params.get(name)
            default = str((spec or {}).get("default", "")) if isinstance(spec, dict) else ""
            if value is None or name in IGNORED_PARAMS or _same(value, default):
                continue
            params[name] = value
    params.update({k: v for k, v in overrides.items() if declared is None or k in declared})
    args = " ".join(f"-P {shlex.quote(f'{k}={v}')}" for k, v in params.items())
    return f"mlflow run . -e {entry} --env-manager local {args}".rstrip()


def _same(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def _finding(view: RunView, kind: str, summary: str, evidence: dict[str, Any], overrides: dict[str, str],
             extra: str = "") -> Finding:  # fmt: skip
    return Finding(kind, summary, evidence, overrides, command_line(view, overrides) if overrides else "", extra)


# ---------------------------------------------------------------- the rules


@rule("divergence")
def divergence(view: RunView) -> Finding | None:
    train = view.train_loss
    values = _vals(train) + _vals(view.val_loss)
    fix = scaled(view, "lr", 0.3)
    if values and not finite(values):
        bad = next(step for step, v in train + view.val_loss if not math.isfinite(v))
        summary = f"the loss became non-finite (NaN or inf) at {_step_name(view, bad)}: training diverged"
        return _finding(view, "divergence", summary, {"first_nonfinite_step": bad}, fix)
    if len(train) < 2:
        return None
    steps, losses = [s for s, _ in train], _vals(train)
    for i in range(1, len(losses)):
        if losses[i - 1] > 0 and losses[i] >= T.spike_ratio * losses[i - 1]:
            summary = (
                f"train loss jumped from {_fmt(losses[i - 1])} to {_fmt(losses[i])} at {_step_name(view, steps[i])} "
                f"(x{losses[i] / losses[i - 1]:.1f}): a loss spike"
            )
            evidence = {"step": steps[i], "before": losses[i - 1], "after": losses[i]}
            return _finding(view, "divergence", summary, evidence, fix)
    if len(losses) >= T.min_epochs and losses[-1] > losses[0] * T.rise_ratio:
        summary = (
            f"train loss ended at {_fmt(losses[-1])}, above where it started ({_fmt(losses[0])} at "
            f"{_step_name(view, steps[0])}): training is moving away from a solution"
        )
        return _finding(view, "divergence", summary, {"first": losses[0], "last": losses[-1]}, fix)
    return None


@rule("overfitting")
def overfitting(view: RunView) -> Finding | None:
    val, train = view.val_loss, dict(view.train_loss)
    if len(val) < T.min_epochs or not train or not finite(_vals(val)):
        return None
    values = _vals(val)
    low = _best_index(values, "min")
    step_low, step_end = val[low][0], val[-1][0]
    after = len(values) - 1 - low
    rise = values[-1] / values[low] - 1 if values[low] > 0 else 0.0
    t_low, t_end = train.get(step_low), train.get(step_end)
    if after < T.overfit_after or rise < T.overfit_rise or t_low is None or t_end is None:
        return None
    if t_end > t_low * (1 - T.overfit_train_drop):
        return None
    summary = (
        f"val loss bottomed at {_fmt(values[low])} at {_step_name(view, step_low)} and rose to {_fmt(values[-1])} by "
        f"{_step_name(view, step_end)} (+{rise:.0%}) while train loss fell from {_fmt(t_low)} to {_fmt(t_end)}"
    )
    evidence = {"val_min_step": step_low, "val_min": values[low], "val_last": values[-1], "val_rise": rise,
                "train_at_min": t_low, "train_last": t_end}  # fmt: skip
    fix = {**setting(view, "epochs", step_low if view.unit == "epoch" else step_low + 1), **scaled(view, "depth", 0.75)}
    fix.update(scaled(view, "samples", 2.0))
    patience = view.knob("patience")
    if patience is not None and patience[1] == 0:
        fix.update(setting(view, "patience", 3))
    return _finding(view, "overfitting", summary, evidence, fix, "More data or stronger augmentation also helps.")


@rule("lr_too_high")
def lr_too_high(view: RunView) -> Finding | None:
    losses = _vals(view.train_loss)
    if len(losses) < T.min_epochs + 1 or not finite(losses):
        return None
    share = _rise_share(losses)
    if share < T.zigzag:
        return None
    lr = view.knob("lr")
    ups = sum(b > a for a, b in zip(losses, losses[1:], strict=False))
    summary = (
        f"train loss went up in {ups} of {len(losses) - 1} {view.unit}s ({share:.0%}): the optimiser overshoots"
        + (f" at {lr[0]}={_fmt(lr[1])}" if lr else "")
    )
    return _finding(
        view, "lr_too_high", summary, {"rising_share": share, "epochs": len(losses)}, scaled(view, "lr", 0.3)
    )


@rule("lr_too_low")
def lr_too_low(view: RunView) -> Finding | None:
    losses = _vals(view.train_loss)
    n = len(losses)
    if n < T.min_epochs + 2 or not finite(losses) or losses[0] <= 0:
        return None
    drop = 1 - losses[-1] / losses[0]
    third = max(2, n // 3)
    first_rate = (losses[0] - losses[third - 1]) / (third - 1)
    last_rate = (losses[-third] - losses[-1]) / (third - 1)
    steady = 1 - _rise_share(losses) >= T.steady
    if not (steady and 0 < drop < T.slow_drop and first_rate > 0 and last_rate >= T.linear_ratio * first_rate):
        return None
    lr = view.knob("lr")
    summary = (
        f"train loss fell only {drop:.0%} in {n} {view.unit}s ({_fmt(losses[0])} -> {_fmt(losses[-1])}), "
        f"and as fast at the end ({_fmt(last_rate)}/{view.unit}) as at the start ({_fmt(first_rate)}/{view.unit}): "
        "steps are too small" + (f" at {lr[0]}={_fmt(lr[1])}" if lr else "")
    )
    evidence = {"drop": drop, "first_rate": first_rate, "last_rate": last_rate}
    return _finding(view, "lr_too_low", summary, evidence, scaled(view, "lr", 3.0))


@rule("underfitting")
def underfitting(view: RunView) -> Finding | None:
    losses, val = _vals(view.train_loss), _vals(view.val_loss)
    n = len(losses)
    if n < T.min_epochs + 2 or not val or not finite(losses + val) or losses[0] <= 0:
        return None
    total = losses[0] - losses[-1]
    tail = losses[-_tail_len(n)] - losses[-1]
    drop = total / losses[0]
    close = abs(val[-1] - losses[-1]) <= T.gap * abs(losses[-1])
    if not (0 < drop < T.underfit_drop and tail <= T.flat_tail * total and close):
        return None
    summary = (
        f"train loss levelled off at {_fmt(losses[-1])} after falling only {drop:.0%}, and val loss "
        f"({_fmt(val[-1])}) is as high: the model cannot fit even the training set"
    )
    evidence = {"train_first": losses[0], "train_last": losses[-1], "val_last": val[-1], "drop": drop}
    fix = {**scaled(view, "depth", 1.5), **scaled(view, "epochs", 2.0), **scaled(view, "lr", 2.0)}
    extra = "A larger variant (edgnet_large, yolov8s.yaml) adds capacity where the family has one."
    return _finding(view, "underfitting", summary, evidence, fix, extra)


def _tail_gain(view: RunView) -> tuple[list[float], int, float, float] | None:
    """(monitor values, tail length, gain of the tail over the best before it, total gain) or None."""
    values = view.values(view.monitor or "")
    if len(values) < T.min_epochs + 1 or not finite(values):
        return None
    k = min(_tail_len(len(values)), len(values) - 1)
    head, tail = values[:-k], values[-k:]
    best_head = max(head) if view.mode == "max" else min(head)
    best_tail = max(tail) if view.mode == "max" else min(tail)
    gain_tail = (best_tail - best_head) if view.mode == "max" else (best_head - best_tail)
    return values, k, gain_tail, _gain(values, view.mode)


@rule("plateau")
def plateau(view: RunView) -> Finding | None:
    found = _tail_gain(view)
    if found is None or _stopped_before_budget(view):
        return None
    values, k, gain_tail, total = found
    if total <= 0 or gain_tail >= T.plateau_gain * total:
        return None
    steps = [s for s, _ in view.series[view.monitor or ""]]
    reached = next(i for i, v in enumerate(values) if abs(v - values[0]) >= (1 - T.plateau_gain) * total)
    summary = (
        f"{view.monitor} stopped improving: the last {k} {view.unit}s gained {max(gain_tail, 0):.3g} of a total "
        f"{total:.3g}; it was within {T.plateau_gain:.1%} of its best by {_step_name(view, steps[reached])}. "
        "More epochs would not pay at this setting"
    )
    evidence = {"tail_epochs": k, "tail_gain": gain_tail, "total_gain": total, "reached_step": steps[reached]}
    epochs = reached + 2
    fix = setting(view, "epochs", epochs)
    return _finding(
        view, "plateau", summary, evidence, fix, "Or keep the epochs and try a lower final lr or more data."
    )


@rule("still_improving")
def still_improving(view: RunView) -> Finding | None:
    found = _tail_gain(view)
    if found is None or _stopped_before_budget(view):
        return None
    values, k, gain_tail, total = found
    best = _best_index(values, view.mode)
    if total <= 0 or gain_tail < T.improving_gain * total or best < len(values) - 2:
        return None
    summary = (
        f"{view.monitor} was still improving when the epochs ran out: the last {k} {view.unit}s added "
        f"{gain_tail:.3g} ({gain_tail / total:.0%} of the run's gain), best at the final {view.unit}. "
        "More epochs would pay"
    )
    evidence = {"tail_epochs": k, "tail_gain": gain_tail, "total_gain": total, "best_index": best}
    return _finding(view, "still_improving", summary, evidence, scaled(view, "epochs", 2.0))


@rule("stopped_early")
def stopped_early(view: RunView) -> Finding | None:
    values = view.values(view.monitor or "")
    stopped_by = view.tags.get(STOPPED_BY_TAG)
    if len(values) < T.min_epochs + 1 or not finite(values) or not _stopped_before_budget(view):
        return None
    if stopped_by and "prun" in stopped_by.lower():
        return None  # a pruned trial was stopped on purpose by the study, not by patience
    patience = view.knob("patience")
    window = values[-min(len(values), max(6, 3 * int(patience[1]) if patience else 6)) :]
    slope, t = _slope_t(window)
    direction = t if view.mode == "max" else -t
    if direction < T.trend_t:
        return None
    summary = (
        f"the run stopped after {len(values)} of {_budget(view)} {view.unit}s, but {view.monitor} was still trending "
        f"better over its last {len(window)} {view.unit}s (slope {slope:+.3g}/{view.unit}, t={direction:.1f}): "
        "early stopping cut an improving run" + (f" ({stopped_by})" if stopped_by else "")
    )
    evidence = {"epochs_run": len(values), "budget": _budget(view), "slope": slope, "t": direction,
                "patience": patience[1] if patience else None}  # fmt: skip
    fix = scaled(view, "patience", 3.0) if patience and patience[1] > 0 else {}
    return _finding(view, "stopped_early", summary, evidence, fix)


@rule("data_bound")
def data_bound(view: RunView) -> Finding | None:
    gpu = [v for key, s in view.system.items() if "gpu" in key and key.endswith("utilization_percentage")
           for _, v in s]  # fmt: skip
    cpu = _vals(view.system.get("system/cpu_utilization_percentage", []))
    if gpu:
        busy, where, limit = statistics.fmean(gpu), "GPU", T.gpu_busy
    elif len(cpu) >= 3 and view.unit == "epoch":
        busy, where, limit = statistics.fmean(cpu), "CPU", T.cpu_busy
    else:
        return None
    if busy >= limit:
        return None
    rate = view.values("samples_per_second")
    speed = f", {statistics.median(rate):.3g} samples/s" if rate else ""
    summary = (
        f"the {where} was busy only {busy:.0f}% of the time on average (below {limit:.0f}%){speed}: "
        "training waits for data loading"
    )
    fix = {**scaled(view, "workers", 2.0), **scaled(view, "batch", 2.0)}
    evidence = {
        "device": where,
        "mean_utilization": busy,
        "samples_per_second": statistics.median(rate) if rate else None,
    }
    return _finding(
        view, "data_bound", summary, evidence, fix, "Cache decoded images or move augmentation off the loop."
    )


@rule("noisy_validation")
def noisy_validation(view: RunView) -> Finding | None:
    values = view.values(view.monitor or "")
    n = len(values)
    if n < T.min_epochs + 2 or not finite(values):
        return None
    diffs = [b - a for a, b in zip(values, values[1:], strict=False)]
    flips = sum((a > 0) != (b > 0) for a, b in zip(diffs, diffs[1:], strict=False) if a and b) / max(len(diffs) - 1, 1)
    smooth = [statistics.fmean(values[max(0, i - 1) : i + 2]) for i in range(n)]
    resid = statistics.pstdev([v - s for v, s in zip(values, smooth, strict=True)])
    span = (max(values) - min(values)) or 1e-12
    train_smooth = _rise_share(_vals(view.train_loss)) < T.zigzag if view.train_loss else True
    if flips < T.noisy_flips or resid < T.noisy_amplitude * span or not train_smooth:
        return None
    summary = (
        f"{view.monitor} changed direction in {flips:.0%} of {view.unit}s with swings of +-{resid:.3g} around its "
        f"3-{view.unit} mean ({resid / span:.0%} of its whole range) while train loss fell smoothly: "
        "the validation set is too small to rank epochs or runs"
    )
    evidence = {"direction_changes": flips, "residual_std": resid, "range": span}
    fix = {**setting(view, "val_fraction", 0.3), **scaled(view, "samples", 2.0)}
    family = view.tags.get(vocab.PRESET) or view.tags.get(vocab.VARIANT) or view.tags.get(vocab.FAMILY) or "FAMILY"
    return _finding(
        view, "noisy_validation", summary, evidence, fix, f"Judge with folds: `kiln cv {family} --folds 5`."
    )


# ---------------------------------------------------------------- across the experiment


def compare_runs(view: RunView, client: MlflowClient, max_runs: int = 500) -> Comparison | None:
    """Best against worst finished run of the run's experiment that logged the same ranking metric."""
    metric = view.ranking
    if not metric:
        return None
    runs = client.search_runs(
        [view.experiment_id], filter_string="attributes.status = 'FINISHED'", max_results=max_runs
    )
    scored = [(r, float(r.data.metrics[metric])) for r in runs if metric in r.data.metrics]
    scored = [(r, v) for r, v in scored if math.isfinite(v)]
    if len(scored) < 2:
        return None
    scored.sort(key=lambda rv: rv[1], reverse=view.mode == "max")
    (best, best_v), (worst, worst_v) = scored[0], scored[-1]
    keys = (set(best.data.params) | set(worst.data.params)) - IGNORED_PARAMS
    changed = {
        k: (worst.data.params.get(k, "-"), best.data.params.get(k, "-"))
        for k in sorted(keys)
        if not _same(worst.data.params.get(k, "-"), best.data.params.get(k, "-"))
    }
    rank = next((i + 1 for i, (r, _) in enumerate(scored) if r.info.run_id == view.run_id), None)
    return Comparison(
        metric, view.mode, len(scored), (best.info.run_id, best_v), (worst.info.run_id, worst_v), changed,
        _correlations([(dict(r.data.params), v) for r, v in scored]), rank,
    )  # fmt: skip


def _correlations(rows: Sequence[tuple[dict[str, str], float]]) -> dict[str, tuple[float, int]]:
    from scipy.stats import spearmanr

    out: dict[str, tuple[float, int]] = {}
    keys = sorted({k for params, _ in rows for k in params} - IGNORED_PARAMS)
    for key in keys:
        pairs = [(_num(p.get(key)), v) for p, v in rows]
        pairs = [(x, v) for x, v in pairs if x is not None]
        if len(pairs) < 3 or len({x for x, _ in pairs}) < 2:
            continue
        rho = spearmanr([x for x, _ in pairs], [v for _, v in pairs]).statistic
        if rho is not None and math.isfinite(float(rho)):
            out[key] = (round(float(rho), 3), len(pairs))
    return dict(sorted(out.items(), key=lambda kv: -abs(kv[1][0])))


def _num(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def describe_comparison(c: Comparison) -> list[str]:
    lines = [
        f"{c.runs} finished runs logged {c.metric} ({'higher' if c.mode == 'max' else 'lower'} is better); "
        f"best {_fmt(c.best[1])} (run {c.best[0][:8]}), worst {_fmt(c.worst[1])} (run {c.worst[0][:8]}), "
        f"a move of {_fmt(abs(c.best[1] - c.worst[1]))}."
        + (f" This run ranks {c.rank} of {c.runs}." if c.rank else ""),
    ]
    if c.changed:
        lines.append("Params that differ between the worst and the best run:")
        lines += [f"- {k}: {a} -> {b}" for k, (a, b) in c.changed.items()]
    else:
        lines.append("The best and the worst run share every param: the spread is noise (seeds, data order).")
    strong = {k: v for k, v in c.correlations.items() if abs(v[0]) >= 0.5}
    if strong:
        lines.append("Params that move with the metric over all runs (Spearman rho):")
        lines += [f"- {k}: rho={rho:+.2f} (n={n})" for k, (rho, n) in strong.items()]
    return lines


# ---------------------------------------------------------------- entry points


def diagnose(view: RunView) -> list[Finding]:
    """Every rule's finding for this run, in rule order."""
    found = [fn(view) for fn in RULES.values()]
    findings = [f for f in found if f is not None]
    kinds = {f.kind for f in findings}
    if "divergence" in kinds:  # a diverged run's other curves say nothing more
        return [f for f in findings if f.kind in ("divergence", "data_bound")]
    return findings


def headline(view: RunView) -> str:
    n = view.epochs_run()
    where = view.tags.get(vocab.PRESET) or view.tags.get(vocab.VARIANT) or view.tags.get(vocab.FAMILY) or "run"
    text = f"{where}: {n} {view.unit}s, status {view.status}."
    values = view.values(view.monitor or "")
    if values:
        best = _best_index(values, view.mode)
        step = view.series[view.monitor or ""][best][0]
        text += f" {view.monitor} ({view.mode}) best {_fmt(values[best])} at {_step_name(view, step)},"
        text += f" last {_fmt(values[-1])}."
    return text


def advise(run_id: str, *, client: MlflowClient | None = None, compare: bool = True) -> Advice:
    client = client or MlflowClient()
    view = load_run(run_id, client)
    comparison = compare_runs(view, client) if compare else None
    return Advice(view.run_id, headline(view), diagnose(view), comparison)


def log_advice(advice: Advice, client: MlflowClient | None = None) -> None:
    """Attach `advice.md` and the tag `kiln.advice` (the kinds found, or 'healthy') to the run."""
    client = client or MlflowClient()
    client.log_text(advice.run_id, advice.markdown(), ADVICE_FILE)
    client.set_tag(advice.run_id, ADVICE_TAG, ", ".join(advice.kinds()) or "healthy")
