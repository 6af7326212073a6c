"""Per-step listeners: every family reports `(step, metrics)` after each epoch (or boosting round), and a listener
may stop the run early and cleanly.

    python -c "from projects.common.callbacks import *; print(EpochListener, StopTraining, report)"

The API, for hyperparameter search (Optuna pruning), progress bars or custom early stopping:

    class Pruner:
        def on_step(self, step: int, metrics: dict[str, float]) -> None:
            trial.report(metrics["val_iou"], step)
            if trial.should_prune():
                raise StopTraining("pruned", export=False)

    train_family("edgnet", {"epochs": 20}, listeners=[Pruner()])

Listeners are passed to what trains, as Lightning's `Trainer(callbacks=[...])` and ultralytics' `add_callback`
keep them on the object that calls them: `train_family(..., listeners=...)` hands them to the family's
`train(cfg, listeners)`, which gives them to the shared trainer (`Trainer(..., listeners=...)`, `add_listener`),
the YOLO callback bridge or the XGBoost round logger. Nothing is held in a module global.

A listener asks to stop by **raising** `StopTraining(reason)` from `on_step`. Training finishes that step (its
checkpoint and metrics are kept), stops, then exports and registers the best weights as usual, unless the
request says `export=False`. The run ends FINISHED with the tag `kiln.stopped_by=<reason>`. Any other exception
from a listener fails the run, as an exception in training would.

The shared trainer (`projects.common.trainer`), the YOLO callback bridge (`projects.yolo.tracking`) and the XGBoost
round logger (`projects.skinmodel.model`) all call `report` with their listeners, so a listener works with every
family.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol


class EpochListener(Protocol):
    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        """Called after each epoch (boosting round) with its validation metrics; raise StopTraining to stop."""


class StopTraining(Exception):  # noqa: N818  (a request, not an error: it never reaches the user)
    """Raised by a listener's `on_step` to end training after this step.

    Args:
        reason: why, recorded as the run tag `kiln.stopped_by` (e.g. "pruned").
        export: False skips the ONNX export and registration of this run (a pruned trial is not worth a version).
    """

    def __init__(self, reason: str, *, export: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.export = export


@dataclass(frozen=True)
class StopRequest:
    """What the training loop keeps after a listener stopped it."""

    reason: str
    step: int
    export: bool = True


def report(step: int, metrics: Mapping[str, float], listeners: Iterable[EpochListener]) -> StopRequest | None:
    """Hand one step's metrics to each of `listeners`; the first StopTraining becomes the returned request.

    Every listener sees the step even when an earlier one asked to stop. The stop is tagged on the active
    MLflow run (`kiln.stopped_by`).
    """
    request: StopRequest | None = None
    values = {k: float(v) for k, v in metrics.items()}
    for listener in tuple(listeners):
        try:
            listener.on_step(step, dict(values))
        except StopTraining as stop:
            request = request or StopRequest(stop.reason, step, stop.export)
    if request is not None:
        _tag_stop(request)
    return request


def _tag_stop(request: StopRequest) -> None:
    import mlflow

    from projects.common.tracking import set_kiln_tags

    if mlflow.active_run() is not None:
        set_kiln_tags(stopped_by=request.reason)
    print(f"Stopped after step {request.step}: {request.reason}", flush=True)


_EXPORTS: list[bool] = []


@contextlib.contextmanager
def exporting(enabled: bool) -> Iterator[None]:
    """Inside `exporting(False)` training skips its ONNX export and registration, as a stop with `export=False`
    does: `kiln tune` and `kiln cv` train trials and folds this way and register one version at the end."""
    _EXPORTS.append(enabled)
    try:
        yield
    finally:
        _EXPORTS.pop()


def figures_wanted() -> bool:
    """Whether this run draws its figures (loss curve, overlays, sample grids): not inside `exporting(False)`.

    A trial or fold draws none; the run that is kept draws them in its finishing pass
    (`experiments.runs.finish_in_run`), so a study pays for the figures of its registered run only."""
    return not _EXPORTS or _EXPORTS[-1]


def wants_export(request: StopRequest | None) -> bool:
    """Export and register unless a listener stopped the run with `export=False` (or `exporting(False)` is on)."""
    if _EXPORTS and not _EXPORTS[-1]:
        return False
    return request is None or request.export
