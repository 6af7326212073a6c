"""The decision bench: every call kiln makes for a user, run on labelled simulated cases, with its error rates.

    .venv/bin/python bench/decisions.py                  # every decision, full size (a few minutes on 2 cores)
    .venv/bin/python bench/decisions.py --quick --json   # the seeded small version the test suite runs
    .venv/bin/python bench/decisions.py --only canary,drift

Each decision is a simulation `fn(quick, seed) -> list[Row]` (bench/decision_rows.py): labelled cases where the
right answer is known, the decision code kiln really runs (registry/, core/, serving/ statistics), and one row per
measured rate with its exact 95% interval and the target from issue #21. The serving and registry decisions
(significance gate, canary guard rails, drift, shadow share, registration) live here; the training side's
(advise, int8 gate, leaderboard, cv intervals, reproducibility, pruning) in bench/decisions_training.py, whose
`SIMULATIONS` this runner merges. docs/decisions.md explains each simulation and holds the measured table.
`--json` prints only the rows (a JSON list) on stdout; progress goes to stderr. The same seed gives the same rows.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.decision_rows import Row, measured  # noqa: E402

Simulation = Callable[[bool, int], list[Row]]


# --- significance gate ---------------------------------------------------------------------------------------

GATE_ALPHA = 0.05
GATE_FOLDS = (3, 5, 10)
GATE_EFFECTS = (0.02, 0.05, 0.10)  # accuracy points the candidate is truly better by
GATE_ROWS, GATE_FEATURES = 120, 8  # the simulated data set: rows, features


def _dataset(rng: np.random.Generator, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A linear two-class problem with label noise: a ridge classifier scores about 0.8 accuracy on it."""
    x = rng.normal(size=(GATE_ROWS, len(beta)))
    y = (x @ beta + rng.normal(scale=1.5, size=GATE_ROWS) > 0).astype(np.float64)
    return x, y


def _cv_accuracy(x: np.ndarray, y: np.ndarray, k: int, rng: np.random.Generator) -> list[float]:
    """k-fold accuracies of a ridge classifier (closed form), folds drawn with `rng` as kiln cv's seed does."""
    order = rng.permutation(len(y))
    out = []
    for fold in np.array_split(order, k):
        train = np.setdiff1d(order, fold)
        a = x[train]
        w = np.linalg.solve(a.T @ a + np.eye(a.shape[1]), a.T @ (2 * y[train] - 1))
        out.append(float(np.mean((x[fold] @ w > 0) == (y[fold] > 0))))
    return out


def significance(quick: bool, seed: int) -> list[Row]:
    """Pairs of `kiln cv` samples of one recipe (no true difference), and with the candidate truly better by
    0.02, 0.05, 0.10 accuracy, through registry.significance.welch with the folds' Nadeau-Bengio variance.
    Two data regimes: both cv runs on the same data set (new fold split), or each on its own draw of the data."""
    from registry.significance import welch

    rng = np.random.default_rng(seed)
    beta = rng.normal(size=GATE_FEATURES)
    pairs = 80 if quick else 2000
    rows: list[Row] = []
    for regime in ("same data", "fresh data"):
        for k in GATE_FOLDS:
            false_gate = false_plain = 0
            power = dict.fromkeys(GATE_EFFECTS, 0)
            for _ in range(pairs):
                x, y = _dataset(rng, beta)
                holder = _cv_accuracy(x, y, k, rng)
                if regime == "fresh data":
                    x, y = _dataset(rng, beta)
                candidate = _cv_accuracy(x, y, k, rng)
                gate = welch(candidate, holder, "max", GATE_ALPHA, candidate_kind="folds", holder_kind="folds")
                false_gate += gate.significant
                false_plain += welch(candidate, holder, "max", GATE_ALPHA).significant
                for effect in GATE_EFFECTS:
                    better = [v + effect for v in candidate]
                    power[effect] += welch(better, holder, "max", GATE_ALPHA, candidate_kind="folds",
                                           holder_kind="folds").significant  # fmt: skip
            detail = {"plain_welch_false_promotion": round(false_plain / pairs, 4), "alpha": GATE_ALPHA}
            rows.append(measured("significance gate", f"false promotion, {k} folds, {regime}, no difference",
                                 pairs, false_gate, "false_alarm", GATE_ALPHA, detail))  # fmt: skip
            for effect in GATE_EFFECTS:
                rows.append(measured("significance gate", f"power, {k} folds, {regime}, +{effect:g} accuracy",
                                     pairs, power[effect], "power", None))  # fmt: skip
    rows.extend(_seed_samples(rng, pairs))
    return rows


def _seed_samples(rng: np.random.Generator, pairs: int) -> list[Row]:
    """Multi-seed samples (kiln cv --seeds, one split): independent draws, where plain Welch is exact."""
    from registry.significance import welch

    rows = []
    for n in GATE_FOLDS:
        false = sum(
            welch(rng.normal(0.8, 0.02, n).tolist(), rng.normal(0.8, 0.02, n).tolist(), "max", GATE_ALPHA,
                  candidate_kind="seeds", holder_kind="seeds").significant for _ in range(pairs)
        )  # fmt: skip
        rows.append(measured("significance gate", f"false promotion, {n} seeds, no difference", pairs, false,
                             "false_alarm", GATE_ALPHA))  # fmt: skip
    return rows


# --- canary guard rails -----------------------------------------------------------------------------------------

CANARY_SHARE = 0.10  # the candidate's share of requests
CANARY_COMPARED = 0.25  # share of the candidate's requests the shadow compares with production under load
PRODUCTION_ERRORS = 0.001  # production's own 5xx rate (timeouts, a dependency's hiccup)
BAD_CANDIDATES = ("p99 +50%", "errors 1%", "errors 5%", "wrong answers")


def _traffic(rng: np.random.Generator, n: int, share: float, kind: str) -> tuple[np.ndarray, ...]:
    """n requests: which side answers, 5xx or not, latency (s) and the shadow agreement of candidate answers.
    Latency: 20 ms x load x lognormal(0, 0.35), load 1 to 1.6 in slow waves plus bursts at 2x every 7,000
    requests, and 1% stalls of 3-8x (a GC pause, a noisy neighbour); both sides see the same load."""
    t = np.arange(n)
    load = (1 + 0.6 * np.sin(2 * np.pi * t / 5000) ** 2) * np.where(((t // 1000) % 7 == 3) & (t % 1000 < 150), 2, 1)
    candidate = rng.random(n) < share
    latency = 0.02 * load * rng.lognormal(0.0, 0.35, n) * np.where(rng.random(n) < 0.01, rng.uniform(3, 8, n), 1)
    if kind == "identical, sticky keys":  # 200 clients whose inputs differ in cost, each key pinned to one side
        client = rng.integers(0, 200, n)
        cost = rng.lognormal(0.0, 0.3, 200)
        candidate = rng.permutation(200)[client] < share * 200
        latency = latency * cost[client]
    error_rate = np.full(n, PRODUCTION_ERRORS)
    agreement = np.ones(n)  # the identical candidate answers what production answers
    if kind == "p99 +50%":
        latency = np.where(candidate, latency * 1.5, latency)
    elif kind.startswith("errors "):
        extra = float(kind.split()[1].rstrip("%")) / 100
        error_rate = np.where(candidate, PRODUCTION_ERRORS + extra, error_rate)
    elif kind == "wrong answers":
        agreement = rng.beta(2, 5, n)  # mean 0.29: wrong on most inputs
    elif kind == "different, good":
        agreement = rng.beta(18, 2, n)  # mean 0.9: disagrees on one input in ten, above min_agreement 0.8
    compared = candidate & (rng.random(n) < CANARY_COMPARED)
    return candidate, rng.random(n) < error_rate, latency, np.where(compared, agreement, np.nan)


def _one_canary(rng: np.random.Generator, n: int, kind: str, share: float) -> tuple[str | None, int, int]:
    """Run one canary through registry.sequential.RailMonitor (as the server does): (failed rail or None,
    candidate requests, all requests) when it ended or ran out."""
    from registry.sequential import RailMonitor

    monitor = RailMonitor()  # the defaults registry.canary.GuardRails carries (tests/registry/test_sequential.py)
    candidate, errors, latency, agreement = _traffic(rng, n, share, kind)
    for i in range(n):
        on_candidate = bool(candidate[i])
        monitor.record(on_candidate, bool(errors[i]), float(latency[i]))
        if not math.isnan(agreement[i]):
            monitor.compared(float(agreement[i]))
        if on_candidate or errors[i]:
            failed = monitor.failure()
            if failed is not None:
                return failed.failed, monitor.candidate_requests, i + 1
    return None, monitor.candidate_requests, n


def canary(quick: bool, seed: int) -> list[Row]:
    """Canaries of a candidate identical to production (and of one that disagrees on 10% of inputs but is
    good), which must not be rolled back; candidates with +50% latency, 1% and 5% extra 5xx, and wrong answers,
    which must all be rolled back, with the candidate requests it took."""
    rng = np.random.default_rng(seed)
    good, bad = (20, 6) if quick else (400, 100)
    length, horizon = (6_000, 60_000) if quick else (20_000, 200_000)
    rows = []
    cases = [("identical", (CANARY_SHARE,) if quick else (CANARY_SHARE, 0.5)),
             ("identical, sticky keys", (CANARY_SHARE,)), ("different, good", (CANARY_SHARE,))]  # fmt: skip
    for kind, shares in cases:
        for share in shares:
            ended = [_one_canary(rng, length, kind, share) for _ in range(good)]
            rails = sorted({r for r, _, _ in ended if r})
            detail = {"requests_per_canary": length, "candidate_share": share, "rails_failed": rails}
            rows.append(measured("canary guard rails", f"false rollback, {kind} candidate, {share:.0%} share",
                                 good, sum(1 for r, _, _ in ended if r), "false_alarm", 0.01, detail))  # fmt: skip
    for kind in BAD_CANDIDATES:
        ended = [_one_canary(rng, horizon, kind, CANARY_SHARE) for _ in range(bad)]
        took = np.asarray([c for r, c, _ in ended if r], dtype=np.float64)
        detail = {"candidate_share": CANARY_SHARE, "rails_failed": sorted({r for r, _, _ in ended if r}),
                  "max_requests": horizon}  # fmt: skip
        if len(took):
            detail.update(candidate_requests_median=float(np.median(took)), candidate_requests_max=float(took.max()),
                          candidate_requests_p90=float(np.percentile(took, 90)))  # fmt: skip
        rows.append(measured("canary guard rails", f"not rolled back, {kind}", bad,
                             sum(1 for r, _, _ in ended if not r), "miss", 0.0, detail))  # fmt: skip
    return rows


# --- drift --------------------------------------------------------------------------------------------------------

DRIFT_WINDOWS = (50, 200, 500, 1000, 5000)
DRIFT_REFERENCE = 2000  # rows (or images) a reference profile is built from, as at export


def _tabular(rng: np.random.Generator, n: int, shift: float = 0.0, missing: bool = False,
             new_category: float = 0.0) -> dict[str, np.ndarray]:  # fmt: skip
    """A tabular model's inputs and outputs: normal, skewed, uniform and heavy-tailed numbers, a 5-level code, a
    flag, a feature missing 5% of the time, the predicted label and its confidence (9 features)."""
    features = {
        "input.normal": rng.normal(0.0, 1.0, n) + shift,
        "input.skewed": np.full(n, np.nan) if missing else rng.lognormal(0.0, 0.8, n),
        "input.uniform": rng.uniform(0.0, 10.0, n),
        "input.heavy": rng.standard_t(3, n),
        "input.code": rng.choice([0.0, 1.0, 2.0, 3.0, 4.0], n, p=[0.4, 0.3, 0.15, 0.1, 0.05]),
        "input.sparse": np.where(rng.random(n) < 0.05, np.nan, rng.normal(5.0, 2.0, n)),
        "input.flag": (rng.random(n) < 0.2).astype(np.float64),
        "output.label": rng.choice(np.array(["a", "b", "c"], dtype=object), n, p=[0.5, 0.3, 0.2]),
        "output.confidence": rng.beta(5.0, 2.0, n),
    }
    if new_category:
        features["input.code"] = np.where(rng.random(n) < new_category, 7.0, features["input.code"])
    return features


def _image_pool(rng: np.random.Generator, count: int) -> dict[str, np.ndarray]:
    """Brightness, contrast and sharpness (core.profile.image_stats) of `count` synthetic 32x32 gray images:
    a smooth random pattern of random brightness and amplitude, sensor noise, sometimes blurred."""
    from core.profile import image_stats

    coarse = rng.normal(size=(count, 4, 4))
    values: dict[str, list[float]] = {"input.brightness": [], "input.contrast": [], "input.sharpness": []}
    for i in range(count):
        pattern = np.kron(coarse[i], np.ones((8, 8)))
        if rng.random() < 0.3:  # out of focus: a 3x3 box blur
            shifted = [np.roll(np.roll(pattern, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            pattern = np.mean(shifted, axis=0)
        gray = rng.normal(120, 20) + rng.uniform(15, 45) * pattern + rng.normal(0, 4, (32, 32))
        for key, value in image_stats(np.clip(gray, 0, 255)).items():
            values["input." + key].append(value)
    return {k: np.asarray(v) for k, v in values.items()}


def _alarms(reference: dict[str, np.ndarray], live: dict[str, np.ndarray]) -> list[str]:
    """Profile the reference as export does, score the live window as the server does: the drifted features."""
    from core.profile import build_profile, correct, score, window_drifted

    inputs = {k.removeprefix("input."): v for k, v in reference.items() if k.startswith("input.")}
    outputs = {k.removeprefix("output."): v for k, v in reference.items() if k.startswith("output.")}
    profile = build_profile(inputs, outputs, rows=len(next(iter(reference.values()))), categorical=("label",))
    return window_drifted(correct({f: score(ref, live[f]) for f, ref in profile.features().items()}))


def _draw(pool: dict[str, np.ndarray], rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    rows = rng.choice(len(next(iter(pool.values()))), n, replace=False)
    return {k: v[rows] for k, v in pool.items()}


def drift(quick: bool, seed: int) -> list[Row]:
    """In-distribution windows of rows and images at 50 to 5,000 samples (each with its own reference, drawn
    as export draws one), which must not alarm; shifted, missing and new-category windows, which must."""
    rng = np.random.default_rng(seed)
    reps, power_reps = (25, 20) if quick else (1000, 300)
    windows = (50, 1000) if quick else DRIFT_WINDOWS
    pool = _image_pool(rng, 3000 if quick else 40_000)
    brightness_sd = float(pool["input.brightness"].std())
    rows: list[Row] = []
    for n in windows:
        alarms = sum(bool(_alarms(_tabular(rng, DRIFT_REFERENCE), _tabular(rng, n))) for _ in range(reps))
        rows.append(measured("drift", f"false alarm, rows, window {n}, 9 features", reps, alarms, "false_alarm",
                             0.01, {"reference": DRIFT_REFERENCE}))  # fmt: skip
        alarms = sum(bool(_alarms(_draw(pool, rng, DRIFT_REFERENCE), _draw(pool, rng, n))) for _ in range(reps))
        rows.append(measured("drift", f"false alarm, images, window {n}, 3 features", reps, alarms,
                             "false_alarm", 0.01, {"reference": DRIFT_REFERENCE}))  # fmt: skip
    for sd in (0.25, 0.5, 1.0):
        found = sum("input.normal" in _alarms(_tabular(rng, DRIFT_REFERENCE), _tabular(rng, 500, shift=sd))
                    for _ in range(power_reps))  # fmt: skip
        rows.append(measured("drift", f"power, rows, window 500, one feature shifted {sd:g} sd", power_reps, found,
                             "power", 0.9 if sd >= 0.5 else None))  # fmt: skip
    found = 0
    for _ in range(power_reps):
        live = _draw(pool, rng, 500)
        live["input.brightness"] = live["input.brightness"] + 0.5 * brightness_sd
        found += "input.brightness" in _alarms(_draw(pool, rng, DRIFT_REFERENCE), live)
    rows.append(measured("drift", "power, images, window 500, brightness shifted 0.5 sd", power_reps, found,
                         "power", 0.9))  # fmt: skip
    for n in (50, 500):
        found = sum("input.skewed" in _alarms(_tabular(rng, DRIFT_REFERENCE), _tabular(rng, n, missing=True))
                    for _ in range(power_reps))  # fmt: skip
        rows.append(measured("drift", f"power, rows, window {n}, a feature stopped arriving", power_reps, found,
                             "power", 0.9))  # fmt: skip
        found = sum("input.code" in _alarms(_tabular(rng, DRIFT_REFERENCE), _tabular(rng, n, new_category=0.05))
                    for _ in range(power_reps))  # fmt: skip
        rows.append(measured("drift", f"power, rows, window {n}, a new category in 5% of rows", power_reps, found,
                             "power", 0.9 if n >= 500 else None))  # fmt: skip
    return rows


# --- shadow share -------------------------------------------------------------------------------------------------

SHADOW_LOADS = (0.3, 0.6, 0.9, 0.98)  # production's utilisation of its core
SHADOW_MIN_COMPARISONS = 20  # GuardRails.min_requests: comparisons the agreement rail waits for


def _shadow_run(rng: np.random.Generator, load: float, requests: int, adaptive: bool) -> tuple[int, int, int]:
    """One server under Poisson traffic (10 ms mean exponential service, M/M/1) with every answered request
    offered to the shadow, through serving/rollout/offpath.py's rules: a shadow run starts only while no
    production request is in flight, a job waiting over 2 s is dropped, and a run of d seconds keeps the shadow
    out for d (1 / budget - 1), the budget being KILN_SHADOW_BUDGET (0.03) or, adaptive, `adaptive_budget` of
    the measured idle share. Returns (compared, dropped, requests offered before the 20th comparison)."""
    from serving.rollout.offpath import IdleShare, adaptive_budget

    clock = [0.0]
    idle = IdleShare(clock=lambda: clock[0])
    arrivals = np.cumsum(rng.exponential(0.010 / load, requests))
    service = rng.exponential(0.010, requests)
    shadow_cost = rng.exponential(0.010, requests)
    queue: list[float] = []  # submit times of waiting shadow jobs
    compared = dropped = 0
    first_enough = requests
    worker_free = allowed_from = busy_until = 0.0
    for i in range(requests):
        start = max(arrivals[i], busy_until)
        if start > busy_until:  # production was idle in [busy_until, arrivals[i]): the shadow may run there
            t = max(busy_until, worker_free)
            while queue and t < arrivals[i]:
                submitted = queue.pop(0)
                if t - submitted > 2.0:
                    dropped += 1
                    continue
                clock[0] = max(clock[0], t)
                budget = adaptive_budget(0.03, idle.share()) if adaptive else 0.03
                d = float(shadow_cost[compared + dropped])
                compared += 1
                if compared == SHADOW_MIN_COMPARISONS:
                    first_enough = i
                t += d
                allowed_from = t + d * (1 / budget - 1)
            worker_free = t
            clock[0] = max(clock[0], arrivals[i])
            idle.mark(False)
        busy_until = start + service[i]
        if busy_until < (arrivals[i + 1] if i + 1 < requests else np.inf):
            clock[0] = max(clock[0], busy_until)
            idle.mark(True)
        if busy_until < allowed_from or len(queue) >= 256:  # over budget or queue full: dropped at submit
            dropped += 1
        else:
            queue.append(busy_until)
    return compared, dropped + len(queue), first_enough


def shadow(quick: bool, seed: int) -> list[Row]:
    """How many requests the shadow compares at 30%, 60% and 90% load with the fixed 3% budget and with the
    budget that grows into production's idle time, and how many requests before the agreement rail can judge."""
    rng = np.random.default_rng(seed)
    requests = 4000 if quick else 40_000
    rows = []
    for load in SHADOW_LOADS:
        for adaptive in (False, True):
            compared, dropped, enough = _shadow_run(rng, load, requests, adaptive)
            rule = "adaptive share" if adaptive else "fixed 3% budget"
            detail = {"compared": compared, "dropped": dropped, "requests_before_20_comparisons": enough,
                      "load": load}  # fmt: skip
            # the target: an adaptive shadow compares at least a tenth of the requests while production leaves
            # time idle, so a 10% canary's agreement rail has its 20 comparisons within a few hundred requests
            limit = 0.1 if adaptive and load <= 0.6 else None
            rows.append(measured("shadow share", f"compared share, load {load:.0%}, {rule}", requests, compared,
                                 "power", limit, detail))  # fmt: skip
    return rows


# --- registration -------------------------------------------------------------------------------------------------

REGISTRATION_VAL = (20, 50, 200)  # validation rows (images) a run scores its ranking metric on
REGISTRATION_SLACK = 0.02  # a model that learned nothing registers at most alpha + this (Monte Carlo error aside)


def _old_rule(value: float, baseline: float, mode: str) -> bool:
    """The rule before issue #21: register when the value merely beats the trivial baseline's."""
    from registry.baseline import at_baseline

    return not at_baseline(value, baseline, mode)


def _tabular_case(rng: np.random.Generator, n: int, task: str, model: str) -> tuple[object, bool]:
    """One simulated skinmodel run's validation rows, through skinmodel's own test (projects/skinmodel/baseline.py):
    (the test, what the point rule decided). Binary: 40% positives, learned scores separate the classes with
    AUC about 0.75. Regression: y = x + noise, R^2 about 0.5 for the learned model. Multiclass: 3 classes."""
    from projects.skinmodel.baseline import baseline_test
    from projects.skinmodel.data import Split

    y_train = rng.normal(scale=np.sqrt(2), size=n)  # regression's training targets: the trivial model's mean
    y: np.ndarray
    if task == "binary":
        y = (rng.random(n) < 0.4).astype(np.int64)
        score = {"learned": 0.95 * y + rng.normal(size=n), "noise": rng.normal(size=n), "constant": np.zeros(n)}[model]
        proba = np.column_stack([1 - 1 / (1 + np.exp(-score)), 1 / (1 + np.exp(-score))])
    elif task == "regression":
        x = rng.normal(size=n)
        y = x + rng.normal(size=n)
        constant = np.full(n, y_train.mean())  # the training mean: the trivial model itself
        proba = {"learned": x, "noise": rng.normal(scale=0.5, size=n), "constant": constant}[model]
    else:
        x = rng.normal(size=(n, 3))
        y = np.argmax(x + rng.gumbel(size=(n, 3)), axis=1)
        logits = {"learned": x, "noise": rng.normal(size=(n, 3)), "constant": np.zeros((n, 3))}[model]
        proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if task != "regression":  # balanced training classes: the constant model (uniform) is the prior itself
        y_train = np.tile(np.arange(3 if task == "multiclass" else 2), n // 2 + 1)
    split = Split(np.zeros((len(y_train), 1)), y_train, np.zeros((n, 1)), y)
    test = baseline_test(task, split, proba)
    return test, _old_rule(test.value, test.baseline, test.mode)


def _val_masks(rng: np.random.Generator, n: int, model: str) -> tuple[np.ndarray, np.ndarray]:
    """n 32x32 validation masks (a 10x10 object each) and the answers of a model that learned (finds the object,
    off by a few pixels), an all-background or all-foreground one, one answering noise (10% or 50% of the
    pixels at random), or a fixed central square (it never looks at the image)."""
    truth = np.zeros((n, 32, 32), dtype=bool)
    for mask in truth:
        y, x = rng.integers(0, 22, 2)
        mask[y : y + 10, x : x + 10] = True
    if model.startswith("learned"):
        reach = 7 if "coarse" in model else 3
        shifts = rng.integers(-reach, reach + 1, (n, 2))
        guess = np.stack([np.roll(np.roll(t, dy, 0), dx, 1) for t, (dy, dx) in zip(truth, shifts, strict=True)])
    elif model.startswith("noise"):
        guess = rng.random(truth.shape) < (0.1 if "10%" in model else 0.5)
    else:
        guess = np.zeros_like(truth)
        if model == "all foreground":
            guess[:] = True
        elif model == "fixed central square":
            guess[:, 8:24, 8:24] = True
    return truth, guess


def _segmentation_case(rng: np.random.Generator, n: int, model: str) -> tuple[object, bool]:
    """A segmentation run's validation images through the test edgnet and microseg hand in (segtrain.py), and
    the point rule against the old baseline, IoU 0 of an all-background mask."""
    from registry.baseline import best_trivial_mask, overlaps, pooled_iou_test

    truth, guess = _val_masks(rng, n, model)
    kind, _, trivial = best_trivial_mask(truth)
    test = pooled_iou_test(overlaps(guess, truth), trivial, kind)
    return test, _old_rule(test.value, 0.0, "max")


def _registration_row(what: str, learned: bool, runs: int, new: int, old: int, limit: float | None) -> Row:
    kind, count = ("miss", runs - new) if learned else ("false_alarm", new)
    before = (runs - old) / runs if learned else old / runs
    verb = "not registered" if learned else "registered"
    return measured("registration", f"{verb}, {what}", runs, count, kind, limit,
                    {"rate before (beats the baseline value)": round(before, 4)})  # fmt: skip


def registration(quick: bool, seed: int) -> list[Row]:
    """Runs whose model did and did not learn, judged by projects.common.registration.decide (register=auto)
    with the test the family hands in (registry/baseline.py, one-sided at REGISTER_ALPHA): the AUC against 0.5
    (Mann-Whitney), per-row losses against the training mean / class frequencies (paired t-test), the pooled IoU
    against the best mask that ignores the image (paired permutation test). Each row's detail holds the rate of
    the rule before issue #21 (register when the value merely beats the baseline's) on the same cases."""
    from core.contract import Ranking
    from projects.common.registration import decide
    from registry.baseline import REGISTER_ALPHA, BaselineTest

    rng = np.random.default_rng(seed)
    runs = 30 if quick else 1000
    null_limit = REGISTER_ALPHA + REGISTRATION_SLACK
    rows = []
    metric = {"binary": ("AUC", "max"), "regression": ("RMSE", "min"), "multiclass": ("log loss", "min")}
    for task, (name, mode) in metric.items():
        sizes = REGISTRATION_VAL if task == "binary" or not quick else REGISTRATION_VAL[1:2]
        for n in sizes:
            for model in ("learned", "noise", "constant"):
                new = old = 0
                for _ in range(runs):
                    test, point = _tabular_case(rng, n, task, model)
                    assert isinstance(test, BaselineTest)
                    new += decide("auto", Ranking(name, mode), test.value, test.baseline, evidence=test).register
                    old += point
                learned = model == "learned"
                limit = (0.05 if n >= 200 else None) if learned else (0.0 if model == "constant" else null_limit)
                how = "learned" if learned else f"did not learn ({model})"
                what = f"tabular {task} {name}, {how}, {n} val rows"
                rows.append(_registration_row(what, learned, runs, new, old, limit))
    seg_runs = runs // 3 if quick else runs // 2
    for n in REGISTRATION_VAL[:2]:
        for model in ("learned", "learned coarsely (off by up to 7 pixels)", "all background", "all foreground",
                      "noise (10%)", "noise (50%)", "fixed central square"):  # fmt: skip
            new = old = 0
            for _ in range(seg_runs):
                test, point = _segmentation_case(rng, n, model)
                assert isinstance(test, BaselineTest)
                new += decide("auto", Ranking("val_iou", "max"), test.value, test.baseline, evidence=test).register
                old += point
            learned = model.startswith("learned")
            limit = (
                (0.05 if model == "learned" else None) if learned else (0.0 if model.startswith("all") else null_limit)
            )
            what = f"segmentation IoU, {model} model, {n} val images"
            rows.append(_registration_row(what, learned, seg_runs, new, old, limit))
    return rows + _detection_noise(rng, runs // 10)


def _detection_noise(rng: np.random.Generator, runs: int) -> list[Row]:
    """yolo has no per-image test yet: it registers when its mAP beats 0, a detector that finds nothing. How often
    does a detector that answers noise (30 random boxes a 64 px image, random class and confidence, as an untrained
    YOLO's low-confidence output) beat that, on 20 and 50 val images with 1-3 objects of 2 classes? mAP50 by
    efficiency/detection.py (mAP50-95, yolo's ranking metric, is 0 exactly when mAP50 is)."""
    from efficiency.detection import Labelled, map50

    def boxes(count: int, low: float, high: float) -> list[Labelled]:
        size = rng.uniform(low, high, (count, 2))
        corner = rng.uniform(0, 64 - size)
        return [Labelled(int(rng.integers(0, 2)), (x, y, x + w, y + h), float(rng.random()))
                for (x, y), (w, h) in zip(corner, size, strict=True)]  # fmt: skip

    rows = []
    for n in REGISTRATION_VAL[:2]:
        registered = 0
        for _ in range(runs):
            truths = [boxes(int(rng.integers(1, 4)), 10, 30) for _ in range(n)]
            registered += map50([boxes(30, 4, 40) for _ in range(n)], truths) > 0
        rows.append(measured("registration", f"registered, detection mAP, noise detector, {n} val images "
                             "(no test yet: beats mAP 0)", runs, registered, "report", None))  # fmt: skip
    return rows


# --- the runner ------------------------------------------------------------------------------------------------

SIMULATIONS: dict[str, Simulation] = {
    "significance": significance,
    "canary": canary,
    "drift": drift,
    "shadow": shadow,
    "registration": registration,
}


def all_simulations() -> dict[str, Simulation]:
    """This module's simulations and the training side's (bench/decisions_training.py), when present."""
    sims = dict(SIMULATIONS)
    try:
        training = importlib.import_module("bench.decisions_training")
    except ModuleNotFoundError as err:
        if err.name != "bench.decisions_training":
            raise
        return sims
    sims.update(getattr(training, "SIMULATIONS", {}))
    return sims


def run(names: list[str] | None, quick: bool, seed: int) -> list[Row]:
    sims = all_simulations()
    unknown = sorted(set(names or []) - set(sims))
    if unknown:
        raise SystemExit(f"Error: unknown decision(s) {unknown}; known: {sorted(sims)}")
    rows: list[Row] = []
    for name in names or list(sims):
        start = time.process_time()
        found = sims[name](quick, seed)
        print(f"{name}: {len(found)} rows, {time.process_time() - start:.1f} s CPU", file=sys.stderr)
        rows.extend(found)
    return rows


def table(rows: list[Row]) -> str:
    """The markdown table docs/decisions.md holds."""
    lines = ["| decision | measure | cases | misses | false alarms | rate | 95% CI | target | met |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- |"]  # fmt: skip
    for r in rows:
        met = "-" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(f"| {r.decision} | {r.measure} | {r.cases} | {r.misses} | {r.false_alarms} | {r.rate:.4f} | "
                     f"{r.ci_low:.4f} .. {r.ci_high:.4f} | {r.target} | {met} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the seeded small version the test suite runs")
    parser.add_argument("--json", action="store_true", help="print only the rows, as a JSON list")
    parser.add_argument("--seed", type=int, default=0, help="seed of every simulation (default 0)")
    parser.add_argument("--only", default="", help="comma-separated decisions (default: all)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or None
    rows = run(names, args.quick, args.seed)
    if args.json:
        print(json.dumps([r.to_json() for r in rows], indent=1))
    else:
        print(table(rows))
    missed = [r for r in rows if r.met is False]
    for r in missed:
        print(f"target missed: {r.decision}: {r.measure}: {r.rate:.4f} (target {r.target})", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
