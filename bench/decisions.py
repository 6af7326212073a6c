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


# --- the runner ------------------------------------------------------------------------------------------------

SIMULATIONS: dict[str, Simulation] = {
    "significance": significance,
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
