"""The training side's decisions on labelled simulated cases: advise, pruning, the int8 gate and cv intervals.

    .venv/bin/python bench/decisions.py --only advise,pruning,int8_gate,cv_interval   # through the shared runner
    .venv/bin/python bench/decisions_training.py --quick                              # these alone, as a table

Each simulation is `fn(quick, seed) -> list[Row]` (bench/decision_rows.py), merged into bench/decisions.py's
runner through `SIMULATIONS`. Each runs the code kiln runs for the decision:

- advise: experiments/advise_sim.py's labelled histories (one planted problem each, every kind, plus healthy
  runs) through `experiments.advise.diagnose`; per kind the miss rate (1 - recall) and the false discovery rate
  (1 - precision), both <= 0.1; a run stuck at its baseline never called healthy; no contradicting findings; no
  command that keeps a value another finding changes.
- pruning: searches whose best config is known (synthetic learning curves: saturating, noisy, some configs slow
  starters that overtake) run through Optuna with `experiments.tune.make_pruner` and the running best that
  `TrialReporter` reports; the best config must never be pruned; epochs saved reported.
- int8_gate: `efficiency.optimize.refusals` on fp32/int8 pairs whose true int8 latency is 0.5x to 2x fp32's,
  timed as `time_both` times them (medians of noisy per-call latencies, two interleaved rounds).
- cv_interval: `experiments.stats.summarize` on 3, 5 and 10 fold values of a metric near its bound (AUC 0.97):
  no interval leaves [0, 1]; its coverage of the true mean is reported.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.decision_rows import Row, measured  # noqa: E402

Simulation = Callable[[bool, int], list[Row]]


# --- advise ----------------------------------------------------------------------------------------------------


def advise(quick: bool, seed: int) -> list[Row]:
    from experiments.advise_sim import KINDS, evaluate

    per_kind = 12 if quick else 200
    ev = evaluate(per_kind, seed)
    rows = []
    for kind in KINDS:
        s = ev.scores[kind]
        rows.append(measured("kiln advise", f"missed {kind} (1 - recall)", s.planted, s.misses, "miss", 0.1,
                             {"recall": round(s.recall, 4)}))  # fmt: skip
        rows.append(measured("kiln advise", f"false {kind} (1 - precision)", s.reported, s.false_alarms,
                             "false_alarm", 0.1, {"precision": round(s.precision, 4)}))  # fmt: skip
    stuck = ev.scores["not_learning"].planted
    rows.append(measured("kiln advise", "healthy verdict for a run stuck at its baseline", stuck,
                         ev.not_learning_called_healthy, "miss", 0.0))  # fmt: skip
    runs = per_kind * (len(KINDS) + 1)
    rows.append(measured("kiln advise", "runs with two findings contradicting on one knob", runs, ev.contradictions,
                         "false_alarm", 0.0))  # fmt: skip
    rows.append(measured("kiln advise", "runs with a command keeping a value judged faulty", runs, ev.kept_faulty,
                         "false_alarm", 0.0))  # fmt: skip
    rows.append(measured("kiln advise", "healthy runs given a finding", ev.healthy_runs, ev.healthy_flagged,
                         "false_alarm", None))  # fmt: skip
    return rows


# --- pruning ---------------------------------------------------------------------------------------------------

PRUNE_TRIALS = 20  # trials of one search
PRUNE_BUDGET = 20  # epochs of one trial


def _curve(rng: random.Random) -> tuple[float, list[float]]:
    """(true final value, noisy per-epoch values) of one config: a saturating curve whose speed varies 6-fold;
    a fifth of the configs start slowly (as a fast lr does under warm-up + cosine) and can overtake late."""
    top = rng.uniform(0.5, 0.9)
    tau = PRUNE_BUDGET / rng.uniform(2.5, 15)
    delay = rng.uniform(0.2, 0.4) * PRUNE_BUDGET if rng.random() < 0.2 else 0.0
    clean = [top * (1 - math.exp(-max(0.0, t + 1 - delay) / tau)) for t in range(PRUNE_BUDGET)]
    return clean[-1], [v + rng.gauss(0, 0.01) for v in clean]


def _search(pruner_name: str, rng: random.Random, seed: int) -> tuple[bool, int, int]:
    """(best config pruned, epochs run, epochs a search without pruning runs) of one search."""
    import optuna

    from experiments.tune import NOISE_ATTR, curve_noise, make_pruner

    configs = [_curve(rng) for _ in range(PRUNE_TRIALS)]
    best = max(range(PRUNE_TRIALS), key=lambda i: configs[i][0])
    if pruner_name == "median-late":  # the median pruner judging only the last third (not kiln's default)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=2 * PRUNE_BUDGET // 3)
    else:
        pruner = make_pruner(pruner_name, PRUNE_TRIALS, PRUNE_BUDGET)
    # a fixed name: hyperband assigns trials to brackets by a hash of the study name and trial number
    study = optuna.create_study(study_name=f"search-{seed}", direction="maximize", pruner=pruner,
                                sampler=optuna.samplers.RandomSampler(seed))  # fmt: skip
    pruned: set[int] = set()
    epochs = 0
    for i, (_, values) in enumerate(configs):
        trial = study.ask()
        running = -math.inf
        for step, value in enumerate(values, start=1):
            epochs += 1
            running = max(running, value)  # TrialReporter reports the objective's running best
            trial.report(running, step)
            if trial.should_prune():
                pruned.add(i)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            trial.set_user_attr(NOISE_ATTR, curve_noise(values))  # as kiln tune's objective records it
            study.tell(trial, running)
    return best in pruned, epochs, PRUNE_TRIALS * PRUNE_BUDGET


def pruning(quick: bool, seed: int) -> list[Row]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searches = 25 if quick else 300
    rows = []
    for name in ("forecast", "median", "median-late", "hyperband"):
        rng = random.Random(seed)
        found = [_search(name, rng, seed + i) for i in range(searches)]
        lost = sum(f[0] for f in found)
        saved = 1 - sum(f[1] for f in found) / sum(f[2] for f in found)
        detail = {"epochs_saved_share": round(saved, 4), "trials": PRUNE_TRIALS, "epochs_per_trial": PRUNE_BUDGET}
        # kiln tune's default (forecast) must never lose the best config; the others, opt-in, trade that for epochs
        limit = 0.0 if name == "forecast" else None
        rows.append(measured("pruning", f"best config pruned, {name} pruner", searches, lost, "miss", limit, detail))
    return rows


# --- int8 gate -------------------------------------------------------------------------------------------------

INT8_RATIOS = (0.5, 0.8, 0.95, 1.05, 1.25, 2.0)  # true int8 p50 / fp32 p50
LATENCY_CV = 0.25  # per-call latency spread on a busy 2-core machine (lognormal sigma)
CALLS = 150  # latencies one `latency(budget_s=1.0)` call collects for a sub-millisecond model, per round


def _timed(rng: random.Random, p50: float) -> float:
    """time_both's estimate: the median of two interleaved rounds of noisy per-call latencies."""
    return statistics.median(p50 * math.exp(rng.gauss(0, LATENCY_CV)) for _ in range(2 * CALLS))


def int8_gate(quick: bool, seed: int) -> list[Row]:
    from efficiency.optimize import refusals

    rng = random.Random(seed)
    pairs = 100 if quick else 2000
    rows = []
    for ratio in INT8_RATIOS:
        refused = 0
        for _ in range(pairs):
            fp32 = rng.uniform(0.05, 5.0)
            refused += bool(refusals(0.0, 0.01, _timed(rng, fp32), _timed(rng, fp32 * ratio), 1000, 400))
        if ratio > 1:
            rows.append(measured("int8 gate", f"int8 {ratio:g}x slower than fp32 registered", pairs,
                                 pairs - refused, "miss", 0.0 if ratio >= 1.25 else None))  # fmt: skip
        else:
            rows.append(measured("int8 gate", f"int8 at {ratio:g}x fp32's latency refused", pairs, refused,
                                 "false_alarm", 0.0 if ratio <= 0.8 else None))  # fmt: skip
    bigger = sum(bool(refusals(0.0, 0.01, 1.0, 0.5, 1000, 1000 + rng.randint(1, 500))) for _ in range(pairs))
    rows.append(measured("int8 gate", "bigger int8 file registered", pairs, pairs - bigger, "miss", 0.0))
    return rows


# --- cv intervals ----------------------------------------------------------------------------------------------


# E[min(X, 1)] for X ~ N(0.97, 0.02): mu - sigma * (phi(z) - z * (1 - Phi(z))), z = 1.5
CLIPPED_MEAN = 0.97 - 0.02 * (
    math.exp(-(1.5**2) / 2) / math.sqrt(2 * math.pi) - 1.5 * 0.5 * math.erfc(1.5 / math.sqrt(2))
)


def cv_interval(quick: bool, seed: int) -> list[Row]:
    from experiments.stats import summarize

    rng = random.Random(seed)
    samples = 200 if quick else 5000
    rows = []
    for folds in (3, 5, 10):
        outside = covered = 0
        for _ in range(samples):
            values = [min(1.0, rng.gauss(0.97, 0.02)) for _ in range(folds)]
            s = summarize(values, "val_auc")
            outside += s.ci95_low < 0.0 or s.ci95_high > 1.0
            covered += s.ci95_low <= CLIPPED_MEAN <= s.ci95_high
        rows.append(measured("cv interval", f"AUC interval outside [0, 1], {folds} folds", samples, outside,
                             "false_alarm", 0.0, {"coverage_of_true_mean": round(covered / samples, 4)}))  # fmt: skip
    return rows


# --- advise on real runs with planted faults --------------------------------------------------------------------

# case -> (edgnet overrides on top of BASE_RUN, kinds of which one must be reported; () = no finding but these)
REAL_CASES: dict[str, tuple[dict[str, object], tuple[str, ...]]] = {
    "healthy": ({}, ()),
    "lr x100": ({"lr": 0.1}, ("divergence", "lr_too_high")),
    "1 epoch": ({"epochs": 1}, ("too_short",)),
    "tiny data (4 images)": ({"count": 4}, ("overfitting", "noisy_validation")),
    "labels shuffled": ({"shuffle": True}, ("not_learning", "overfitting", "noisy_validation")),
}
HEALTHY_OK = ("still_improving", "plateau")  # a short healthy run may still be improving or have converged


def _drawings(folder: Path, count: int, shuffle: bool, seed: int) -> Path:
    """Generated 64 px drawings; `shuffle` gives every image another image's mask."""
    from data.drawings import generate

    data = generate(folder, count=count, size=64, seed=seed)
    if shuffle:
        masks = sorted((data / "masks").glob("*.png"))
        blobs = [m.read_bytes() for m in masks]
        for mask, blob in zip(masks, blobs[1:] + blobs[:1], strict=True):
            mask.write_bytes(blob)
    return data


def _real_run(folder: Path, change: dict[str, object], epochs: int, seed: int) -> str:
    """Train one short edgnet run with the planted change; returns its run id."""
    import mlflow

    from projects.common.families import train_family

    count, shuffle = int(str(change.get("count", 20))), bool(change.get("shuffle"))
    overrides = {k: v for k, v in change.items() if k not in ("count", "shuffle")}
    cfg = {"data": str(_drawings(folder, count, shuffle, seed)), "epochs": epochs, "img_size": 64, "batch_size": 4,
           "patience": 0, "base_channels": 8, "overlay_every": 0, "register": "never", "seed": seed,
           **overrides}  # fmt: skip
    train_family("edgnet", cfg)
    runs = mlflow.search_runs(order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    return str(runs[0].info.run_id)


def advise_real(quick: bool, seed: int) -> list[Row]:
    """Short real edgnet runs (64 px drawings, a narrow UNet) with one planted fault each, then `kiln advise`.
    One run per case: the rows report what was said, they carry no statistical target."""
    import os
    import tempfile

    import mlflow

    from experiments.advise import advise as run_advice

    epochs = 6 if quick else 12
    rows = []
    old = os.environ.get("MLFLOW_TRACKING_URI")
    with tempfile.TemporaryDirectory(prefix="kiln-advise-real-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        try:
            for i, (case, (change, expected)) in enumerate(REAL_CASES.items()):
                found = run_advice(_real_run(Path(tmp) / f"case{i}", change, epochs, seed), compare=False).kinds()
                ok = bool(set(found) & set(expected)) if expected else set(found) <= set(HEALTHY_OK)
                detail = {"found": found, "expected_one_of": list(expected) or f"none but {HEALTHY_OK}"}
                rows.append(measured("kiln advise", f"real edgnet run, {case}: wrong or missing call", 1, int(not ok),
                                     "miss", None, detail))  # fmt: skip
        finally:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            if old is not None:
                os.environ["MLFLOW_TRACKING_URI"] = old
                mlflow.set_tracking_uri(old)
    return rows


SIMULATIONS: dict[str, Simulation] = {
    "advise": advise,
    "pruning": pruning,
    "int8_gate": int8_gate,
    "cv_interval": cv_interval,
    "advise_real": advise_real,
}


def main(argv: list[str] | None = None) -> int:
    from bench.decisions import table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = [row for fn in SIMULATIONS.values() for row in fn(args.quick, args.seed)]
    print(table(rows))
    return 1 if any(r.met is False for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
