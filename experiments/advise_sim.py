"""Labelled run histories for `kiln advise`: synthetic curves with one planted problem each, and healthy ones.

    python -m experiments.advise_sim --runs 60 --seed 0     # recall and precision per kind, Wilson 95% intervals

Each history is an edgnet-like run (train/val loss, a monitored validation metric in [0, 1], CPU or GPU
utilisation) with realistic lengths (10 to 60 epochs), curve shapes (exponential decay and saturation with a
random time constant) and noise (0.3-1% on the train loss, 0.5-2% of the metric's gain per epoch). A problem is
planted by changing only what that problem changes: the time constant (plateau, still improving, lr too low),
the val loss after a turning point (overfitting), the noise (noisy validation), a loss blow-up (divergence), the
utilisation (data bound), a metric stuck at the trivial baseline (not learning). docs/decisions.md gives each
kind's generator ranges. `evaluate` runs `diagnose` over every history and counts, per kind, hits (planted and
reported), misses (planted, not reported) and false alarms (reported, not planted).
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from core import vocab
from experiments.runview import RunView, Series, resolve_curves

KINDS = (
    "divergence", "not_learning", "overfitting", "lr_too_high", "lr_too_low", "underfitting", "plateau",
    "still_improving", "stopped_early", "data_bound", "noisy_validation",
)  # fmt: skip
HEALTHY = "healthy"
METRIC = "val_iou"


@dataclass
class Curves:
    """A run being built: per-epoch values, params and tags."""

    n: int
    train: list[float]
    val: list[float]
    metric: list[float]
    util: list[float]
    gpu: bool = False
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def _decay(rng: random.Random, n: int, first: float, floor: float, tau: float, noise: float) -> list[float]:
    return [(floor + (first - floor) * math.exp(-t / tau)) * (1 + rng.gauss(0, noise)) for t in range(n)]


def _rise(rng: random.Random, n: int, start: float, top: float, tau: float, noise: float) -> list[float]:
    """A metric saturating from `start` towards `top`, with noise `noise` * its gain over the run, clipped to [0, 1]."""
    sd = noise * (top - start) * (1 - math.exp(-(n - 1) / tau))
    return [min(1.0, max(0.0, start + (top - start) * (1 - math.exp(-t / tau)) + rng.gauss(0, sd))) for t in range(n)]


def healthy(rng: random.Random, n: int | None = None) -> Curves:
    """A run that learns and is near convergence at its end: the last third still gains 5-13% of the total."""
    n = n or rng.randint(10, 60)
    first = rng.uniform(0.8, 3.0)
    floor = first * rng.uniform(0.05, 0.3)
    train = _decay(rng, n, first, floor, n / rng.uniform(3.5, 6), rng.uniform(0.003, 0.01))
    gap = rng.uniform(0.02, 0.12)
    val = [v * (1 + gap) * (1 + rng.gauss(0, rng.uniform(0.005, 0.015))) for v in train]
    start, top = rng.uniform(0.0, 0.3), rng.uniform(0.5, 0.95)
    metric = _rise(rng, n, start, top, n / rng.uniform(3.5, 6), rng.uniform(0.005, 0.02))
    util = [min(100.0, max(0.0, rng.gauss(rng.uniform(45, 95), 5))) for _ in range(max(3, n // 2))]
    params = {"epochs": str(n), "lr": "0.001", "patience": "0", "batch_size": "8"}
    tags = {vocab.FAMILY: "edgnet", vocab.VARIANT: "edgnet", vocab.METRIC: "best_val_iou", vocab.MODE: "max"}
    if rng.random() < 0.5:
        tags[vocab.BASELINE] = "0.0"
    return Curves(n, train, val, metric, util, rng.random() < 0.3, params, tags)


def healthy_stopped(rng: random.Random) -> Curves:
    """A healthy run that early stopping ended on a flat metric, before its epoch budget."""
    c = healthy(rng)
    c.metric = _rise(rng, c.n, c.metric[0], rng.uniform(0.5, 0.95), c.n / rng.uniform(8, 12), rng.uniform(0.005, 0.02))
    c.params.update(epochs=str(c.n + rng.randint(5, 40)), patience=str(rng.randint(3, 6)))
    c.tags[vocab.STOPPED_BY] = "early stopping: patience exhausted"
    return c


# ---------------------------------------------------------------- one generator per planted kind

Planter = Callable[[random.Random], Curves]
PLANTERS: dict[str, Planter] = {}


def plants(kind: str) -> Callable[[Planter], Planter]:
    def register(fn: Planter) -> Planter:
        PLANTERS[kind] = fn
        return fn

    return register


@plants("divergence")
def _divergence(rng: random.Random) -> Curves:
    c = healthy(rng)
    k = rng.randint(3, c.n - 2)
    how = rng.choice(("nan", "explode", "spike", "rise"))
    if how == "nan":  # the trainer stops at the first non-finite loss
        c.train[k] = math.nan
        c.n, c.train, c.val, c.metric = k + 1, c.train[: k + 1], c.val[: k + 1], c.metric[: k + 1]
    elif how == "explode":  # the edgnet run at lr=1.0: val_loss 6.9e18
        growth = rng.uniform(1.5, 12)
        c.val = c.val[:k] + [c.val[k - 1] * 10 ** min(30.0, growth * (i + 1)) for i in range(c.n - k)]
        c.metric = c.metric[:k] + [0.0] * (c.n - k)
    elif how == "spike":
        factor = rng.uniform(2.5, 10)
        c.train = c.train[:k] + [v * (1 + (factor - 1) * math.exp(-(i / 2))) for i, v in enumerate(c.train[k:])]
    else:  # the loss falls, then climbs back above where it started
        low = c.train[k]
        c.train = c.train[: k + 1] + [low * (1 + rng.uniform(0.2, 0.6)) ** (i + 1) for i in range(c.n - k - 1)]
        c.train[-3:] = [max(v, c.train[0] * rng.uniform(1.05, 1.5)) for v in c.train[-3:]]
    c.params["lr"] = rng.choice(("0.001", "0.01", "1.0"))
    return c


@plants("not_learning")
def _not_learning(rng: random.Random) -> Curves:
    c = healthy(rng)
    if rng.random() < 0.7:  # mAP or IoU 0 at every epoch, the family's baseline tagged
        c.tags[vocab.BASELINE] = "0.0"
        c.metric = [0.0] * c.n
    else:  # no baseline tag: the metric never moved (a constant prediction)
        c.tags.pop(vocab.BASELINE, None)
        c.metric = [round(rng.uniform(0.05, 0.6), 4)] * c.n
    return c


@plants("overfitting")
def _overfitting(rng: random.Random) -> Curves:
    c = healthy(rng)
    turn = rng.randint(max(3, int(0.25 * c.n)), int(0.6 * c.n))
    rise = rng.uniform(0.15, 0.8)
    low = c.val[turn]
    for t in range(turn + 1, c.n):
        c.val[t] = low * (1 + rise * (t - turn) / (c.n - 1 - turn)) * (1 + rng.gauss(0, 0.01))
    peak = c.metric[turn]
    drop = rng.uniform(0.02, 0.1) * peak
    for t in range(turn + 1, c.n):
        c.metric[t] = peak - drop * (t - turn) / (c.n - 1 - turn) + rng.gauss(0, 0.005)
    return c


@plants("lr_too_high")
def _lr_too_high(rng: random.Random) -> Curves:
    c = healthy(rng)
    amplitude = rng.uniform(0.08, 0.25)
    sign = 1
    for t in range(1, c.n):
        sign = -sign if rng.random() < 0.8 else sign
        c.train[t] *= 1 + amplitude * sign * rng.uniform(0.6, 1.0)
    c.val = [v * (1 + rng.uniform(0.02, 0.1)) for v in c.train]
    c.metric = [m * rng.uniform(0.85, 1.0) for m in c.metric]
    return c


@plants("lr_too_low")
def _lr_too_low(rng: random.Random) -> Curves:
    c = healthy(rng)
    first, drop = rng.uniform(0.8, 3.0), rng.uniform(0.05, 0.25)
    c.train = [first * (1 - drop * t / (c.n - 1)) * (1 + rng.gauss(0, rng.uniform(0.002, 0.006))) for t in range(c.n)]
    c.val = [v * (1 + rng.uniform(0.02, 0.1)) for v in c.train]
    start, gain = rng.uniform(0.0, 0.2), rng.uniform(0.05, 0.3)
    c.metric = [start + gain * t / (c.n - 1) + rng.gauss(0, 0.01 * gain) for t in range(c.n)]
    c.params["lr"] = rng.choice(("1e-05", "3e-05", "0.0001"))
    return c


@plants("underfitting")
def _underfitting(rng: random.Random) -> Curves:
    c = healthy(rng)
    first = rng.uniform(0.8, 3.0)
    floor = first * rng.uniform(0.55, 0.85)
    c.train = _decay(rng, c.n, first, floor, c.n / rng.uniform(6, 10), rng.uniform(0.003, 0.008))
    c.val = [v * (1 + rng.uniform(0.0, 0.08)) for v in c.train]
    c.metric = _rise(rng, c.n, rng.uniform(0.0, 0.1), rng.uniform(0.2, 0.45), c.n / rng.uniform(6, 10), 0.01)
    return c


@plants("plateau")
def _plateau(rng: random.Random) -> Curves:
    c = healthy(rng)
    start, top = c.metric[0], rng.uniform(0.5, 0.95)
    c.metric = _rise(rng, c.n, start, top, c.n / rng.uniform(12, 20), rng.uniform(0.005, 0.02))
    return c


@plants("still_improving")
def _still_improving(rng: random.Random) -> Curves:
    c = healthy(rng)
    c.train = _decay(rng, c.n, c.train[0], c.train[0] * 0.1, c.n / rng.uniform(1, 2), 0.005)
    c.val = [v * 1.05 for v in c.train]
    c.metric = _rise(rng, c.n, rng.uniform(0.0, 0.2), rng.uniform(0.6, 0.95), c.n * rng.uniform(0.7, 3), 0.015)
    return c


@plants("stopped_early")
def _stopped_early(rng: random.Random) -> Curves:
    c = _still_improving(rng)
    c.params.update(epochs=str(c.n + rng.randint(5, 60)), patience=str(rng.randint(1, 3)))
    c.tags[vocab.STOPPED_BY] = "early stopping: patience exhausted"
    return c


@plants("data_bound")
def _data_bound(rng: random.Random) -> Curves:
    c = healthy(rng)
    c.gpu = rng.random() < 0.5
    mean = rng.uniform(5, 35) if c.gpu else rng.uniform(8, 27)
    c.util = [min(100.0, max(0.0, rng.gauss(mean, 4))) for _ in c.util]
    return c


@plants("noisy_validation")
def _noisy_validation(rng: random.Random) -> Curves:
    c = healthy(rng)
    start, top = c.metric[0], rng.uniform(0.4, 0.9)
    c.metric = _rise(rng, c.n, start, top, c.n / rng.uniform(3.5, 6), rng.uniform(0.12, 0.3))
    return c


# ---------------------------------------------------------------- views and evaluation


def to_view(c: Curves, run_id: str) -> RunView:
    def series(values: Sequence[float]) -> Series:
        return [(t + 1, float(v)) for t, v in enumerate(values)]

    data = {"train_loss": series(c.train), "val_loss": series(c.val), METRIC: series(c.metric)}
    key = "system/gpu_0_utilization_percentage" if c.gpu else "system/cpu_utilization_percentage"
    view = RunView(run_id, "0", run_id, "FINISHED", dict(c.params), dict(c.tags),
                   {k: s[-1][1] for k, s in data.items()}, data, {key: series(c.util)})  # fmt: skip
    resolve_curves(view)
    return view


def labelled(runs_per_kind: int, seed: int) -> list[tuple[str, RunView]]:
    """`runs_per_kind` histories of every kind and as many healthy ones (a fifth of them stopped early)."""
    rng = random.Random(seed)
    out: list[tuple[str, RunView]] = []
    for kind in (*KINDS, HEALTHY):
        for i in range(runs_per_kind):
            stopped = kind == HEALTHY and i % 5 == 4
            curves = healthy_stopped(rng) if stopped else healthy(rng) if kind == HEALTHY else PLANTERS[kind](rng)
            out.append((kind, to_view(curves, f"{kind}-{i}")))
    return out


@dataclass(frozen=True)
class KindScore:
    kind: str
    planted: int
    hits: int
    reported: int  # runs where the kind was reported, planted or not

    @property
    def misses(self) -> int:
        return self.planted - self.hits

    @property
    def false_alarms(self) -> int:
        return self.reported - self.hits

    @property
    def recall(self) -> float:
        return self.hits / self.planted if self.planted else 1.0

    @property
    def precision(self) -> float:
        return self.hits / self.reported if self.reported else 1.0


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval of a binomial proportion (stays in [0, 1], sane at 0 and n)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Evaluation:
    scores: dict[str, KindScore]
    healthy_flagged: int  # healthy runs with any finding
    healthy_runs: int
    not_learning_called_healthy: int  # runs whose metric never beat the baseline, given no finding at all
    contradictions: int  # runs with two findings moving one knob group in opposite directions
    kept_faulty: int  # commands that keep a value another finding of the same run changes


def evaluate(runs_per_kind: int = 40, seed: int = 0) -> Evaluation:
    from experiments.advise import contradicts, diagnose

    planted = {k: 0 for k in KINDS}
    hits = dict(planted)
    reported = dict(planted)
    healthy_flagged = healthy_runs = stuck_healthy = contradictions = kept = 0
    for kind, view in labelled(runs_per_kind, seed):
        findings = diagnose(view)
        found = {f.kind for f in findings}
        if kind == HEALTHY:
            healthy_runs += 1
            healthy_flagged += bool(found)
        else:
            planted[kind] += 1
            hits[kind] += kind in found
        if kind == "not_learning" and not found:
            stuck_healthy += 1
        for k in found:
            reported[k] += 1
        contradictions += any(contradicts(view, a, b) for a in findings for b in findings if a is not b)
        kept += sum(_keeps_faulty(f.command, other.overrides) for f in findings for other in findings)
    scores = {k: KindScore(k, planted[k], hits[k], reported[k]) for k in KINDS}
    return Evaluation(scores, healthy_flagged, healthy_runs, stuck_healthy, contradictions, kept)


def _keeps_faulty(command: str, fixes: dict[str, str]) -> bool:
    """True when a command line passes a param at a value other than the fix another finding gave it."""
    if not command:
        return False
    given = dict(part.split("=", 1) for part in command.replace("'", "").split(" -P ")[1:])
    return any(name in given and given[name] != value for name, value in fixes.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60, help="histories per kind (and healthy)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ev = evaluate(args.runs, args.seed)
    print(f"{'kind':18} {'planted':>7} {'recall':>7} {'95% CI':>15} {'reported':>8} {'precision':>9} {'95% CI':>15}")
    for s in ev.scores.values():
        r, p = wilson(s.hits, s.planted), wilson(s.hits, s.reported)
        print(f"{s.kind:18} {s.planted:7} {s.recall:7.3f} {r[0]:7.3f}..{r[1]:.3f} {s.reported:8} {s.precision:9.3f} "
              f"{p[0]:7.3f}..{p[1]:.3f}")  # fmt: skip
    print(f"healthy runs with a finding: {ev.healthy_flagged} of {ev.healthy_runs}")
    print(f"not_learning runs called healthy: {ev.not_learning_called_healthy}; contradictions: {ev.contradictions}; "
          f"commands keeping a faulty value: {ev.kept_faulty}")  # fmt: skip


if __name__ == "__main__":
    main()
