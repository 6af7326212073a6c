"""Parent and nested child runs for `kiln tune` and `kiln cv`, and training a family inside a given child run.

    python -c "from experiments.runs import PARENT_TAG; print(PARENT_TAG)"

The parent is the run `mlflow run` created (MLFLOW_RUN_ID) or a new one; every trial, fold or seed is a child
run tagged `mlflow.parentRunId`, which the MLflow UI nests under the parent. A family's `train(cfg)` joins the run
named by MLFLOW_RUN_ID (`projects.common.tracking.start_run`), so a child is created first and training is
pointed at it; a child whose training failed before it opened the run is closed FAILED here.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import RunStatus

from core import vocab

PARENT_TAG = vocab.PARENT_TAG
RUN_NAME_TAG = vocab.RUN_NAME_TAG
NOTE_TAG = vocab.NOTE_TAG
EXPERIMENT_KIND = {vocab.EXPERIMENT_KIND_TAG: vocab.TRAINING_KIND}


def experiment_id(client: MlflowClient, name: str | None) -> str:
    """The named experiment (created, with kiln's kind tag, on first use), else MLflow's current one."""
    if name:
        found = client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        from registry.names import check_experiment_name  # a new name follows the registry's rule

        return str(client.create_experiment(check_experiment_name(name), tags=EXPERIMENT_KIND))
    env = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if env:
        return env
    env_name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if env_name:
        return experiment_id(client, env_name)
    return "0"


def open_parent(client: MlflowClient, experiment: str, name: str, tags: Mapping[str, str], reuse: str | None) -> str:
    """The parent run: MLFLOW_RUN_ID under `mlflow run`, else `reuse` (a resumed study's parent), else a new run."""
    run_id = os.environ.get("MLFLOW_RUN_ID") or reuse
    if run_id:
        if client.get_run(run_id).info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
    else:
        run_id = str(client.create_run(experiment, tags={RUN_NAME_TAG: name}, run_name=name).info.run_id)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    return run_id


def close_parent(client: MlflowClient, run_id: str, status: str = "FINISHED") -> None:
    """End the parent unless `mlflow run` owns it (it ends its own run when the command exits)."""
    if os.environ.get("MLFLOW_RUN_ID") != run_id:
        client.set_terminated(run_id, status)


def create_child(client: MlflowClient, parent: str, name: str, tags: Mapping[str, str]) -> str:
    experiment = client.get_run(parent).info.experiment_id
    all_tags = {PARENT_TAG: parent, RUN_NAME_TAG: name, **tags}
    return str(client.create_run(experiment, tags=all_tags, run_name=name).info.run_id)


@contextlib.contextmanager
def pointed_at(run_id: str) -> Iterator[None]:
    """Point `tracking.start_run` at `run_id` for the block; MLFLOW_RUN_ID comes back as it was."""
    before = os.environ.get("MLFLOW_RUN_ID")
    os.environ["MLFLOW_RUN_ID"] = run_id
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_RUN_ID", None)
        else:
            os.environ["MLFLOW_RUN_ID"] = before


def train_in_run(
    client: MlflowClient,
    run_id: str,
    target: str,
    overrides: Mapping[str, Any],
    listeners: Iterable[Any] = (),
    export: bool = False,
) -> dict[str, float]:
    """Train family or preset `target` inside child run `run_id`; `export=False` skips ONNX export and registration.

    An exception from training propagates after the run is marked FAILED (training may fail before it opens the
    run, which would otherwise stay RUNNING).
    """
    from projects.common.callbacks import exporting
    from projects.common.families import train_family

    try:
        with pointed_at(run_id), exporting(export):
            return train_family(target, dict(overrides), listeners=tuple(listeners))
    except BaseException:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "FAILED")
        raise


def finish_in_run(client: MlflowClient, run_id: str, target: str, overrides: Mapping[str, Any]) -> dict[str, float]:
    """Export and register the model that child run `run_id` trained, in that run, without training it again.

    Every family's `resume` of a finished run trains nothing: the torch families find every epoch done (or the stop
    recorded) in last.pt and load best.pt; skinmodel loads the booster it checkpointed at the end of training
    (`projects.skinmodel.checkpoint`); YOLO loads the weights/best.pt ultralytics wrote. Each then draws the figures
    the trial or fold skipped where it has any, and exports and registers as a plain run would (the same
    registration decision and tags); the version's source run is `run_id`. A run whose checkpoint is gone fails
    with a ResumeError naming it.
    """
    return train_in_run(client, run_id, target, {**overrides, "resume": run_id}, export=True)


def run_status(client: MlflowClient, run_id: str) -> str:
    return str(client.get_run(run_id).info.status)


def mark_failed(client: MlflowClient, run_id: str, error: BaseException) -> None:
    message = f"{type(error).__name__}: {error}"[:4000]
    client.set_tag(run_id, vocab.ERROR, message)
    if run_status(client, run_id) == "RUNNING":
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))


def stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
