"""A job's progress and metric curves, read from MLflow itself rather than parsed from the training log.

    python -m jobs.progress RUN_ID [EPOCHS]     # prints epoch progress and the latest metrics of a run

Every kiln entry point logs its per-epoch metrics with `step=epoch` (ultralytics counts epochs from 0, the
kiln trainer from 1), so the epochs done are the number of distinct steps of the most-logged metric.
MLflow's system metrics (`system/...`) have their own step counter and are left out.

After the last epoch a run still exports and registers its model: training says so in the run tag `kiln.phase`
(`exporting`, `registering`). The ETA comes from the metric timestamps: the mean time between logged epochs.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run

from core import vocab

SYSTEM_PREFIX = "system/"
PHASE_TAG = vocab.PHASE  # set by training after the epochs: "exporting", then "registering"
METRIC_TAG = vocab.METRIC  # the metric a run is ranked and promoted by


@dataclass(frozen=True)
class Curve:
    steps: list[int]
    values: list[float]
    times: list[int] = field(default_factory=list, compare=False)  # ms since the epoch at which each step was logged

    def as_json(self) -> dict[str, list[Any]]:
        return {"steps": self.steps, "values": self.values}


@dataclass(frozen=True)
class Progress:
    current_epoch: int | None  # epochs with metrics logged; None before the first
    total_epochs: int | None  # from the job's `epochs` param; None when the entry point has none
    metrics: dict[str, float]  # latest value of each training metric
    run_status: str | None  # MLflow's status of the run (RUNNING, FINISHED, FAILED, KILLED)
    phase: str | None = None  # "training", then the run's kiln.phase tag ("exporting", "registering"); None at end
    eta_seconds: float | None = None  # time left for the remaining epochs, from the pace so far
    task_metric: str | None = None  # the run's kiln.metric tag, shown first

    @property
    def percent(self) -> float | None:
        if self.total_epochs is None or self.total_epochs <= 0:
            return None
        return round(min(100.0, 100.0 * (self.current_epoch or 0) / self.total_epochs), 1)


def epochs_done(curves: dict[str, Curve]) -> int | None:
    """Distinct steps of the most-logged training metric: one per finished epoch, whichever base it counts from."""
    counts = [len(set(c.steps)) for key, c in curves.items() if not key.startswith(SYSTEM_PREFIX)]
    return max(counts, default=0) or None


def seconds_per_epoch(curves: dict[str, Curve]) -> float | None:
    """Mean time between consecutive epochs of the most-logged training metric; None before the second epoch."""
    timed = [c for key, c in curves.items() if not key.startswith(SYSTEM_PREFIX) and len(c.times) > 1]
    if not timed:
        return None
    longest = max(timed, key=lambda c: len(c.times))
    return (longest.times[-1] - longest.times[0]) / 1000.0 / (len(longest.times) - 1)


def phase_of(status: str | None, tags: dict[str, str], done: int | None, total: int | None) -> str | None:
    if status != "RUNNING":
        return None
    tagged = tags.get(PHASE_TAG)
    if tagged:
        return tagged
    if done and total and done >= total:
        return "finishing"  # the epochs are over; export and registration follow
    return "training"


def logged_epochs(params: dict[str, str]) -> int | None:
    """The epoch count a run logged as a param: `epochs`, else one nested key ending in `.epochs`."""
    keys = ["epochs"] if "epochs" in params else [k for k in params if k.endswith(".epochs")]
    if len(keys) != 1:
        return None
    try:
        value = float(params[keys[0]])
    except ValueError:
        return None
    return int(value) if value.is_integer() and value > 0 else None


class RunReader:
    """Reads runs through one MlflowClient, caching each run's curves for `ttl` seconds (pages poll often)."""

    def __init__(self, tracking_uri: str, ttl: float = 1.0) -> None:
        self.client = MlflowClient(tracking_uri)
        self.ttl = ttl
        self._cache: dict[tuple[str, bool], tuple[float, dict[str, Curve]]] = {}
        self._lock = threading.Lock()

    def curves(
        self, run_id: str, include_system: bool = False, max_age: float | None = None, run: Run | None = None
    ) -> dict[str, Curve]:
        """Metric history of every metric of the run, sorted by step (the last value wins on a repeated step)."""
        key = (run_id, include_system)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < (self.ttl if max_age is None else max_age):
            return hit[1]
        run = run or self.client.get_run(run_id)
        names = [k for k in run.data.metrics if include_system or not k.startswith(SYSTEM_PREFIX)]
        curves = {name: self._curve(run_id, name) for name in sorted(names)}
        with self._lock:
            self._cache[key] = (time.monotonic(), curves)
        return curves

    def _curve(self, run_id: str, name: str) -> Curve:
        by_step: dict[int, tuple[int, float]] = {}
        for m in self.client.get_metric_history(run_id, name):
            if m.step not in by_step or m.timestamp >= by_step[m.step][0]:
                by_step[m.step] = (m.timestamp, m.value)
        steps = sorted(by_step)
        return Curve(steps=steps, values=[by_step[s][1] for s in steps], times=[by_step[s][0] for s in steps])

    def progress(self, run_id: str, total_epochs: int | None, max_age: float | None = None) -> Progress:
        """`total_epochs` None: the run's own `epochs` param (a config file may set it), when it logged one."""
        run = self.client.get_run(run_id)
        curves = self.curves(run_id, max_age=max_age, run=run)
        total_epochs = total_epochs or logged_epochs(run.data.params)
        metrics = {k: v for k, v in run.data.metrics.items() if not k.startswith(SYSTEM_PREFIX)}
        done = epochs_done(curves)
        if done is not None and total_epochs:
            done = min(done, total_epochs)
        status, tags = run.info.status, dict(run.data.tags)
        phase = phase_of(status, tags, done, total_epochs)
        pace = seconds_per_epoch(curves)
        eta = None
        if phase == "training" and pace is not None and done and total_epochs:
            eta = round(pace * (total_epochs - done), 1)
        return Progress(done, total_epochs, metrics, status, phase, eta, tags.get(METRIC_TAG))


def main(argv: list[str]) -> None:
    import os

    reader = RunReader(os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"), ttl=0)
    total = int(float(argv[1])) if len(argv) > 1 else None
    p = reader.progress(argv[0], total)
    eta = f", about {p.eta_seconds:.0f} s left" if p.eta_seconds is not None else ""
    print(f"{p.run_status}: epoch {p.current_epoch}/{p.total_epochs} ({p.percent}%), {p.phase or 'ended'}{eta}")
    for key, value in sorted(p.metrics.items()):
        print(f"  {key} = {value:.6g}")


if __name__ == "__main__":
    from core.scripts import script_args

    main(script_args(sys.argv[1:], "python -m jobs.progress RUN_ID [EPOCHS]", __doc__, range(1, 3)))
