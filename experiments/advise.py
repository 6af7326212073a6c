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

import functools
import math
import shlex
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient

from core import vocab
from experiments.runview import KNOBS, STOPPED_BY_TAG, RunView, Series, finite, load_run

ADVICE_TAG = vocab.ADVICE
ADVICE_FILE = "advice.md"
MLPROJECT = Path(__file__).resolve().parents[1] / "MLproject"
# Params that say nothing about the training recipe; left out of command lines and run comparisons.
IGNORED_PARAMS = frozenset({"resume", "model_name", "data", "device", "run_name", "config", "hyp"})


@dataclass(frozen=True)
class Thresholds:
    min_epochs: int = 4  # curves shorter than this are not judged (only NaN/divergence and data_bound are)
    spike_ratio: float = 2.0  # a train loss at least this many times the previous epoch's is a spike
    explode_ratio: float = 50.0  # any loss this many times the lowest value before it: it blew up (6.9e18)
    rise_ratio: float = 1.0  # the last 3 train losses' mean above the first loss: the loss went up overall
    lr_factor: float = 10.0  # an lr this many times the entry point's default (or 1/this) is far off the recipe
    overfit_rise: float = 0.10  # smoothed val loss ending this fraction above its minimum ...
    overfit_after: int = 2  # ... at least this many epochs after the minimum, while train loss falls
    overfit_train_drop: float = 0.05  # train loss must fall by at least this fraction after the val minimum
    jitter: float = 0.03  # a train-loss step up counts as a rise only above this fraction (batch noise)
    zigzag: float = 0.3  # share of epochs whose train loss rose by more than `jitter`: the optimiser overshoots
    slow_drop: float = 0.30  # total fitted relative train-loss drop below this is slow ...
    slow_t: float = 4.0  # ... yet a clear downward trend (t-statistic of the slope) ...
    linear_ratio: float = 0.5  # ... and still linear: the second half's slope >= this * the first half's
    underfit_drop: float = 0.50  # train loss fell less than this fraction overall ...
    flat_tail: float = 0.10  # ... and its last third fell less than this fraction of the whole drop ...
    gap: float = 0.15  # ... and val loss is within this fraction of train loss: it cannot fit the train set
    plateau_gain: float = 0.03  # the last third gained less than this share of the run's gain: a plateau
    improving_gain: float = 0.20  # the last third gained at least this share, still trending: still improving
    trend_t: float = 2.0  # t-statistic of the metric's slope over the last window: a stopped run still improved
    window_gain: float = 0.05  # ... by at least this share of the run's gain over that window (not a flat crawl)
    zigzag_noise: float = 0.05  # robust sd of log train loss between epochs above this: it oscillates (lr too high)
    noisy_ratio: float = 0.06  # robust noise sd of the validation metric above this share of its gain: noisy
    gpu_busy: float = 40.0  # mean GPU utilisation (%) below this: the GPU waits for data
    cpu_busy: float = 30.0  # mean CPU utilisation (%) below this on a CPU run: the loop waits for I/O


# When a root cause is found, the findings it explains are left out: their remedies (more epochs, fewer epochs)
# treat a symptom and would contradict the root cause's (a 1.0 learning rate both overfits and stops early).
EXPLAINS: dict[str, frozenset[str]] = {
    "divergence": frozenset({"overfitting", "lr_too_high", "lr_too_low", "underfitting", "plateau",
                             "still_improving", "stopped_early", "noisy_validation", "not_learning", "too_short"}),
    "not_learning": frozenset({"overfitting", "lr_too_low", "underfitting", "plateau", "still_improving",
                               "stopped_early", "noisy_validation"}),
    "lr_too_high": frozenset({"overfitting", "plateau", "still_improving", "stopped_early", "noisy_validation"}),
    "lr_too_low": frozenset({"underfitting", "still_improving", "stopped_early", "plateau"}),
    "overfitting": frozenset({"plateau", "still_improving", "stopped_early"}),
    "underfitting": frozenset({"plateau"}),
    # a noisy metric cannot show a trend at the end of a run, nor its absence
    "noisy_validation": frozenset({"plateau", "still_improving", "stopped_early"}),
}  # fmt: skip
# Knobs that act on the same thing: a finding that lowers one and a finding that raises another contradict.
KNOB_GROUPS: dict[str, str] = {"epochs": "length", "patience": "length", "lr": "lr", "depth": "capacity"}
# Fallback defaults where the MLproject default is "auto" (YOLO's lr0=0, cr_recon's lr="").
KNOWN_DEFAULTS: dict[str, float] = {"lr0": 0.01, "lr": 0.001, "learning_rate": 0.3}


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
    judged: bool = True  # False for a run with no curves of its own (a cv parent, an optimize run)

    def kinds(self) -> list[str]:
        return [f.kind for f in self.findings]

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "headline": self.headline,
            "findings": [f.to_json() for f in self.findings],
            "comparison": self.comparison.to_json() if self.comparison else None,
            "judged": self.judged,
        }

    def markdown(self) -> str:
        lines = [f"# Advice for run {self.run_id}", "", self.headline, ""]
        if not self.findings and self.judged:
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


@functools.cache
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


# ---------------------------------------------------------------- the learning rate against the recipe


def lr_default(view: RunView) -> tuple[str, float] | None:
    """(param, default) of the run's learning rate: its entry point's MLproject default, else a known default."""
    found = view.knob("lr")
    if found is None:
        return None
    name = found[0]
    entry = entry_point(view)
    declared = _entry_params(entry) if entry else None
    spec = (declared or {}).get(name)
    default = _float(spec.get("default")) if isinstance(spec, dict) else None
    if default is None or default <= 0:
        default = KNOWN_DEFAULTS.get(name)
    return (name, default) if default else None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def lower_lr(view: RunView) -> dict[str, str]:
    """A smaller learning rate: the recipe's default when the run is far above it, else a third of the run's.

    Never a value still far above the default (lr=1.0 -> 0.3 is 300x edgnet's 0.001, still diverging).
    """
    found, default = view.knob("lr"), lr_default(view)
    if found is None:
        return {}
    name, value = found
    target = value * 0.3
    if default is not None and value > 3 * default[1]:
        target = default[1]
    return {name: _as_param(name, target)}


def raise_lr(view: RunView) -> dict[str, str]:
    """A larger learning rate: the recipe's default when the run is far below it, else three times the run's."""
    found, default = view.knob("lr"), lr_default(view)
    if found is None:
        return {}
    name, value = found
    target = value * 3.0
    if default is not None and value < default[1] / 3:
        target = default[1]
    if default is not None:
        target = min(target, default[1] * T.lr_factor / 2)
    return {name: _as_param(name, target)}


def lr_far_off(view: RunView) -> tuple[str, float, float, float] | None:
    """(param, value, default, ratio) when the run's lr is at least `lr_factor` times above or below its default."""
    found, default = view.knob("lr"), lr_default(view)
    if found is None or default is None or found[1] <= 0:
        return None
    ratio = found[1] / default[1]
    return (found[0], found[1], default[1], ratio) if ratio >= T.lr_factor or ratio <= 1 / T.lr_factor else None


# ---------------------------------------------------------------- the rules


@rule("divergence")
def divergence(view: RunView) -> Finding | None:
    train, val = view.train_loss, view.val_loss
    fix = lower_lr(view)
    bad = next((step for step, v in sorted(train + val) if not math.isfinite(v)), None)
    if bad is not None:
        summary = f"the loss became non-finite (NaN or inf) at {_step_name(view, bad)}: training diverged"
        return _finding(view, "divergence", summary, {"first_nonfinite_step": bad}, fix)
    for name, curve in (("train", train), ("val", val)):
        found = _explosion(curve)
        if found is not None:
            step, low, value = found
            summary = (
                f"{name} loss exploded to {_fmt(value)} at {_step_name(view, step)}, {value / low:.3g}x its lowest "
                f"value before ({_fmt(low)}): training diverged"
            )
            return _finding(view, "divergence", summary, {"curve": name, "step": step, "low": low, "value": value}, fix)
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
    end = statistics.fmean(losses[-3:])
    if len(losses) >= T.min_epochs and end > losses[0] * T.rise_ratio:
        summary = (
            f"train loss ended at {_fmt(losses[-1])} (mean of the last 3: {_fmt(end)}), above where it started "
            f"({_fmt(losses[0])} at {_step_name(view, steps[0])}): training is moving away from a solution"
        )
        return _finding(view, "divergence", summary, {"first": losses[0], "last": losses[-1]}, fix)
    return None


def _explosion(curve: Series) -> tuple[int, float, float] | None:
    """(step, lowest value before it, value) of the first loss that is `explode_ratio` times the lowest before."""
    low = math.inf
    for step, value in curve:
        if 0 < low < math.inf and value >= T.explode_ratio * low:
            return step, low, value
        low = min(low, value) if value > 0 else low
    return None


@rule("not_learning")
def not_learning(view: RunView) -> Finding | None:
    """The monitored metric never beat the family's trivial baseline (or, without one, never moved at all)."""
    values = view.values(view.monitor or "") if view.monitor and not view.monitor.endswith("*") else []
    if not values and view.ranking in view.final:
        values = [view.final[view.ranking or ""]]
    if not values or not finite(values):
        return None
    baseline = view.baseline()
    best = max(values) if view.mode == "max" else min(values)
    if baseline is not None:
        if best > baseline if view.mode == "max" else best < baseline:
            return None
        why = f"never beat the family's trivial baseline {_fmt(baseline)} ({view.tags.get(vocab.BASELINE_KIND, '')})"
    elif len(values) >= 3 and max(values) - min(values) <= 1e-9 * max(1.0, abs(values[0])):
        why = f"stayed at {_fmt(values[0])} at every {view.unit}"
    else:
        return None
    summary = (
        f"{view.monitor or view.ranking} {why.rstrip(' ()')}: best {_fmt(best)} over {len(values)} {view.unit}s. "
        "The model learned nothing measurable"
    )
    far = lr_far_off(view)
    if far is not None:
        fix = {far[0]: _as_param(far[0], far[2])}
        summary += f"; {far[0]}={_fmt(far[1])} is {_ratio_words(far[3])} the default {_fmt(far[2])}"
    else:
        fix = scaled(view, "epochs", 3.0) if len(values) < 10 else {}
    evidence = {"best": best, "baseline": baseline, "epochs": len(values)}
    extra = "Check the labels against the images (`kiln data check`), and that the val split has positives."
    return _finding(view, "not_learning", summary, evidence, fix, extra)


def _ratio_words(ratio: float) -> str:
    return f"{ratio:.3g}x" if ratio >= 1 else f"1/{1 / ratio:.3g} of"


@rule("overfitting")
def overfitting(view: RunView) -> Finding | None:
    val, train = view.val_loss, dict(view.train_loss)
    if len(val) < T.min_epochs or not train or not finite(_vals(val)):
        return None
    values = _smooth(_vals(val))
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
        f"{_step_name(view, step_end)} (+{rise:.0%}, 3-{view.unit} means) while train loss fell from {_fmt(t_low)} "
        f"to {_fmt(t_end)}"
    )
    evidence = {"val_min_step": step_low, "val_min": values[low], "val_last": values[-1], "val_rise": rise,
                "train_at_min": t_low, "train_last": t_end}  # fmt: skip
    fix = {**setting(view, "epochs", step_low if view.unit == "epoch" else step_low + 1), **scaled(view, "depth", 0.75)}
    fix.update(scaled(view, "samples", 2.0))
    patience = view.knob("patience")
    if patience is not None and patience[1] == 0:
        fix.update(setting(view, "patience", 3))
    return _finding(view, "overfitting", summary, evidence, fix, "More data or stronger augmentation also helps.")


def _smooth(values: Sequence[float]) -> list[float]:
    """Centred 3-point mean (2 points at the ends): one noisy epoch should not move a minimum or an end."""
    return [statistics.fmean(values[max(0, i - 1) : i + 2]) for i in range(len(values))]


def _big_rises(losses: Sequence[float]) -> int:
    return sum(b > a * (1 + T.jitter) for a, b in zip(losses, losses[1:], strict=False))


def _zigzag(losses: Sequence[float]) -> tuple[float, float]:
    """(share of epochs the train loss rose by more than `jitter`, robust epoch-to-epoch sd of its log)."""
    if len(losses) < 3 or min(losses) <= 0:
        return 0.0, 0.0
    share = _big_rises(losses) / (len(losses) - 1)
    return share, _noise_sd([math.log(v) for v in losses])


def _oscillates(losses: Sequence[float]) -> bool:
    share, noise = _zigzag(losses)
    return share >= T.zigzag or noise >= T.zigzag_noise


@rule("lr_too_high")
def lr_too_high(view: RunView) -> Finding | None:
    losses = _vals(view.train_loss)
    far = lr_far_off(view)
    if far is not None and far[3] >= T.lr_factor:
        summary = (
            f"{far[0]}={_fmt(far[1])} is {far[3]:.3g}x the entry point's default {_fmt(far[2])}: steps that large "
            "overshoot, and the curves' other symptoms (early overfitting, early stopping) follow from it"
        )
        evidence = {"lr": far[1], "default": far[2], "ratio": far[3]}
        return _finding(view, "lr_too_high", summary, evidence, lower_lr(view))
    if len(losses) < T.min_epochs + 1 or not finite(losses) or not _oscillates(losses):
        return None
    share, noise = _zigzag(losses)
    lr = view.knob("lr")
    summary = (
        f"train loss went up by more than {T.jitter:.0%} in {_big_rises(losses)} of {len(losses) - 1} {view.unit}s "
        f"and swings by +-{noise:.1%} from {view.unit} to {view.unit}: the optimiser overshoots"
        + (f" at {lr[0]}={_fmt(lr[1])}" if lr else "")
    )
    evidence = {"rising_share": share, "log_noise": noise, "epochs": len(losses)}
    return _finding(view, "lr_too_high", summary, evidence, lower_lr(view))


@rule("lr_too_low")
def lr_too_low(view: RunView) -> Finding | None:
    losses = _vals(view.train_loss)
    n = len(losses)
    if n < T.min_epochs + 2 or not finite(losses) or losses[0] <= 0:
        return None
    slope, t = _slope_t(losses)
    drop = -slope * (n - 1) / losses[0]  # the fitted line's total fall, relative to the start
    half = n // 2
    first, _ = _slope_t(losses[: half + 1])
    second, _ = _slope_t(losses[half:])
    if not (-t >= T.slow_t and 0 < drop < T.slow_drop and first < 0 and second <= T.linear_ratio * first):
        return None
    lr = view.knob("lr")
    summary = (
        f"train loss fell only {drop:.0%} in {n} {view.unit}s ({_fmt(losses[0])} -> {_fmt(losses[-1])}) on a straight "
        f"line, as fast in the second half ({_fmt(-second)}/{view.unit}) as in the first ({_fmt(-first)}/{view.unit}): "
        "steps are too small" + (f" at {lr[0]}={_fmt(lr[1])}" if lr else "")
    )
    evidence = {"drop": drop, "first_rate": -first, "last_rate": -second, "t": -t}
    return _finding(view, "lr_too_low", summary, evidence, raise_lr(view))


@rule("underfitting")
def underfitting(view: RunView) -> Finding | None:
    losses, val = _vals(view.train_loss), _vals(view.val_loss)
    n = len(losses)
    if n < T.min_epochs + 2 or not val or not finite(losses + val) or losses[0] <= 0:
        return None
    k = max(2, n // 3)
    end = statistics.fmean(losses[-k:])
    total = losses[0] - end
    tail = statistics.fmean(losses[-2 * k : -k]) - end
    drop = total / losses[0]
    val_end = statistics.fmean(val[-k:])
    close = abs(val_end - end) <= T.gap * abs(end)
    if not (0 < drop < T.underfit_drop and tail <= T.flat_tail * total and close):
        return None
    summary = (
        f"train loss levelled off at {_fmt(end)} after falling only {drop:.0%}, and val loss "
        f"({_fmt(val_end)}) is as high: the model cannot fit even the training set"
    )
    evidence = {"train_first": losses[0], "train_last": end, "val_last": val_end, "drop": drop}
    fix = {**scaled(view, "depth", 1.5), **scaled(view, "epochs", 2.0)}
    extra = "A larger variant (edgnet_large, yolov8s.yaml) adds capacity where the family has one."
    return _finding(view, "underfitting", summary, evidence, fix, extra)


def _thirds(view: RunView) -> tuple[list[float], int, float, float] | None:
    """(monitor values, third's length, gain of the last third's mean over the middle third's, total gain)."""
    values = view.values(view.monitor or "")
    if len(values) < T.min_epochs + 2 or not finite(values):
        return None
    k = max(2, len(values) // 3)
    sign = 1.0 if view.mode == "max" else -1.0
    tail_gain = sign * (statistics.fmean(values[-k:]) - statistics.fmean(values[-2 * k : -k]))
    total = sign * (statistics.fmean(values[-k:]) - values[0])
    return values, k, tail_gain, total


@rule("plateau")
def plateau(view: RunView) -> Finding | None:
    found = _thirds(view)
    if found is None or _stopped_before_budget(view):
        return None
    values, k, gain_tail, total = found
    if total <= 0 or gain_tail >= T.plateau_gain * total:
        return None
    steps = [s for s, _ in view.series[view.monitor or ""]]
    smooth = _smooth(values)
    sign = 1.0 if view.mode == "max" else -1.0
    final = statistics.fmean(values[-k:])
    reached = next(
        (i for i, v in enumerate(smooth) if sign * (v - values[0]) >= 0.95 * sign * (final - values[0])),
        len(values) - 1,
    )
    summary = (
        f"{view.monitor} stopped improving: its last {k} {view.unit}s averaged {max(gain_tail, 0):.3g} better than "
        f"the {k} before, of a total gain of {total:.3g}; it was within 5% of that by "
        f"{_step_name(view, steps[reached])}. More epochs would not pay at this setting"
    )
    evidence = {"tail_epochs": k, "tail_gain": gain_tail, "total_gain": total, "reached_step": steps[reached]}
    fix = setting(view, "epochs", reached + 2)
    return _finding(
        view, "plateau", summary, evidence, fix, "Or keep the epochs and try a lower final lr or more data."
    )


@rule("still_improving")
def still_improving(view: RunView) -> Finding | None:
    found = _thirds(view)
    if found is None or _stopped_before_budget(view):
        return None
    values, k, gain_tail, total = found
    _, t = _slope_t(values[-k:]) if k >= 3 else (0.0, 0.0)
    trend = t if view.mode == "max" else -t
    if total <= 0 or gain_tail < T.improving_gain * total or (k >= 3 and trend < T.trend_t):
        return None
    summary = (
        f"{view.monitor} was still improving when the epochs ran out: the last {k} {view.unit}s averaged "
        f"{gain_tail:.3g} better than the {k} before ({gain_tail / total:.0%} of the run's gain). More epochs would pay"
    )
    evidence = {"tail_epochs": k, "tail_gain": gain_tail, "total_gain": total, "t": trend}
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
    # the last third of the run, at least 6 epochs and 3 patience windows: long enough to see a slow trend
    size = max(6, len(values) // 3, 3 * int(patience[1]) if patience else 6)
    window = values[-min(len(values), size) :]
    slope, t = _slope_t(window)
    direction = t if view.mode == "max" else -t
    total = _gain(values, view.mode)
    if direction < T.trend_t or abs(slope) * (len(window) - 1) < T.window_gain * total:
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


@rule("too_short")
def too_short(view: RunView) -> Finding | None:
    """A run whose whole budget was shorter than the curves the other rules need: say so, not "healthy"."""
    n = view.epochs_run()
    if n == 0 or n >= T.min_epochs or _stopped_before_budget(view):
        return None
    summary = (
        f"the run trained for {_plural(n, view.unit)}, its whole budget: too short for a learning curve, so "
        "overfitting, plateaus and learning-rate problems cannot be judged"
    )
    fix = setting(view, "epochs", max(3 * T.min_epochs, 5 * n))
    return _finding(view, "too_short", summary, {"epochs": n}, fix)


@rule("noisy_validation")
def noisy_validation(view: RunView) -> Finding | None:
    values = view.values(view.monitor or "")
    n = len(values)
    if n < T.min_epochs + 2 or not finite(values):
        return None
    noise = _noise_sd(values)
    k = max(2, n // 3)
    gain = abs(statistics.fmean(values[-k:]) - statistics.fmean(values[:2])) or 1e-12
    if noise < T.noisy_ratio * gain or _oscillates(_vals(view.train_loss)):
        return None
    summary = (
        f"{view.monitor} swings by +-{noise:.3g} from {view.unit} to {view.unit} (robust noise estimate), "
        f"{noise / gain:.0%} of its whole gain of {gain:.3g}, while train loss fell smoothly: "
        "the validation set is too small to rank epochs or runs"
    )
    evidence = {"noise_sd": noise, "gain": gain, "ratio": noise / gain}
    fix = {**setting(view, "val_fraction", 0.3), **scaled(view, "samples", 2.0)}
    family = view.tags.get(vocab.PRESET) or view.tags.get(vocab.VARIANT) or view.tags.get(vocab.FAMILY) or "FAMILY"
    return _finding(
        view, "noisy_validation", summary, evidence, fix, f"Judge with folds: `kiln cv {family} --folds 5`."
    )


def _noise_sd(values: Sequence[float]) -> float:
    """Epoch-to-epoch noise sd from the median absolute second difference: a smooth curve's second differences
    are small except at its knee, white noise's have sd sqrt(6) * sigma, and the median ignores the knee."""
    second = [abs(a - 2 * b + c) for a, b, c in zip(values, values[1:], values[2:], strict=False)]
    return 1.4826 * statistics.median(second) / math.sqrt(6) if second else 0.0


# ---------------------------------------------------------------- across the experiment


def compare_runs(view: RunView, client: MlflowClient, max_runs: int = 500) -> Comparison | None:
    """Best against worst finished run of the run's experiment that logged the same ranking metric."""
    metric = view.ranking
    if not metric:
        return None
    runs = client.search_runs(
        [view.experiment_id], filter_string="attributes.status = 'FINISHED'", max_results=max_runs
    )
    scored = [(r, float(r.data.metrics[metric])) for r in runs if metric in r.data.metrics and _comparable(r.data.tags)]
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


def _comparable(tags: Mapping[str, str]) -> bool:
    """A trained run: not an int8/optimize run (another model's numbers, `yolo.*` params) nor a cv parent."""
    if vocab.OPTIMIZED_FROM in tags or tags.get(vocab.INT8) == "true":
        return False
    return not (vocab.CV_KIND in tags and not {vocab.CV_ROLE, vocab.CV_FOLD, vocab.CV_SEED} & set(tags))


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
    """The findings of every rule for this run, in rule order, less those a root cause explains or contradicts.

    A `kiln cv` parent and a `kiln optimize` run have no curves of their own: nothing to diagnose.
    """
    if view.cv_parent or view.optimized:
        return []
    found = [f for f in (fn(view) for fn in RULES.values()) if f is not None]
    kinds = {f.kind for f in found}
    explained = {k for kind in kinds for k in EXPLAINS.get(kind, frozenset())}
    kept: list[Finding] = []
    for finding in found:
        if finding.kind not in explained and not any(contradicts(view, finding, k) for k in kept):
            kept.append(finding)
    return _carry_fixes(view, kept)


def directions(view: RunView, finding: Finding) -> dict[str, int]:
    """Knob group (length, lr, capacity) -> +1 or -1: which way the finding's overrides move it."""
    out: dict[str, int] = {}
    for param, text in finding.overrides.items():
        knob = next((k for k, names in KNOBS.items() if param in names), None)
        group = KNOB_GROUPS.get(knob or "")
        old, new = _num(view.params.get(param)), _num(text)
        if group is None or old is None or new is None or old == new:
            continue
        if knob == "patience" and old == 0:  # patience 0 means no early stopping: any patience stops sooner
            out[group] = -1
        else:
            out[group] = 1 if new > old else -1
    return out


def contradicts(view: RunView, a: Finding, b: Finding) -> bool:
    """True when a and b move the same knob group in opposite directions (fewer epochs and more patience)."""
    da, db = directions(view, a), directions(view, b)
    return any(da[g] != db[g] for g in da.keys() & db.keys())


def _carry_fixes(view: RunView, findings: list[Finding]) -> list[Finding]:
    """Give every finding's command the other findings' fixes too, so no command keeps a value judged faulty."""
    if len(findings) < 2:
        return findings
    out = []
    for finding in findings:
        merged = {k: v for other in findings if other is not finding for k, v in other.overrides.items()}
        merged.update(finding.overrides)
        out.append(replace(finding, command=command_line(view, merged)) if merged else finding)
    return out


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" + ("" if n == 1 else "s")


def headline(view: RunView) -> str:
    where = view.tags.get(vocab.PRESET) or view.tags.get(vocab.VARIANT) or view.tags.get(vocab.FAMILY) or "run"
    if view.cv_parent:
        return _cv_headline(view, where)
    if view.optimized:
        source = view.tags.get(vocab.OPTIMIZED_FROM, "another version")
        return f"{where}: a kiln optimize run (int8 of {source}); it trains nothing, so it has no curves to judge."
    text = f"{where}: {_plural(view.epochs_run(), view.unit)}, status {view.status}."
    values = view.values(view.monitor or "")
    if values:
        best = _best_index(values, view.mode)
        step = view.series[view.monitor or ""][best][0]
        text += f" {view.monitor} ({view.mode}) best {_fmt(values[best])} at {_step_name(view, step)},"
        text += f" last {_fmt(values[-1])}."
    return text


def _cv_headline(view: RunView, where: str) -> str:
    n, kind = view.tags.get(vocab.CV_N, "?"), view.tags.get(vocab.CV_KIND, "parts")
    text = f"{where}: a kiln cv parent over {n} {kind}; it trains nothing itself (advise its child runs)."
    metric = view.ranking or ""
    for key in (metric, metric.removeprefix("best_")):
        mean, std = view.final.get(f"cv/{key}/mean"), view.final.get(f"cv/{key}/std")
        if mean is not None and std is not None:
            low, high = view.final.get(f"cv/{key}/ci95_low"), view.final.get(f"cv/{key}/ci95_high")
            text += f" {key} {_fmt(mean)} ± {_fmt(std)}"
            text += f" (95% CI {_fmt(low)} .. {_fmt(high)})." if low is not None and high is not None else "."
            break
    return text


def advise(run_id: str, *, client: MlflowClient | None = None, compare: bool = True) -> Advice:
    client = client or MlflowClient()
    view = load_run(run_id, client)
    comparison = compare_runs(view, client) if compare else None
    judged = not (view.cv_parent or view.optimized)
    return Advice(view.run_id, headline(view), diagnose(view), comparison if judged else None, judged)


def log_advice(advice: Advice, client: MlflowClient | None = None) -> None:
    """Attach `advice.md` and the tag `kiln.advice` (the kinds found, or 'healthy') to the run."""
    client = client or MlflowClient()
    client.log_text(advice.run_id, advice.markdown(), ADVICE_FILE)
    client.set_tag(
        advice.run_id, ADVICE_TAG, ", ".join(advice.kinds()) or ("healthy" if advice.judged else "not judged")
    )
