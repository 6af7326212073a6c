"""MLflow tracking shared by every entry point: join the run, log config, dataset, per-epoch metrics, notes.

    python -m projects.edgnet.train --epochs 1   # any entry point uses this module

Metrics go through MLflow's async logging so the training step never waits on the tracking store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow

from core import vocab

TAG_PREFIX = vocab.PREFIX  # kiln's own run and version tags: kiln.family, kiln.metric, kiln.stopped_by, ...
# MLflow caps a param value at 6000 characters; longer values (lists of class names) are cut with a marker.
_MAX_PARAM_CHARS = 6000


@contextlib.contextmanager
def start_run(run_name: str | None = None, resume_run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """Join the run `mlflow run` created, or reopen `resume_run_id`, or start a new run.

    System metrics are on when psutil is importable. Async metric writes are flushed before the run ends,
    so a finished run always holds every metric.
    """
    _enable_system_metrics()
    _buffer_async_logging()
    env_run = os.environ.get("MLFLOW_RUN_ID")
    if resume_run_id and env_run and env_run != resume_run_id:
        # `mlflow run -P resume=<id>` creates a fresh run before our code starts; resuming means continuing
        # the old run, so the fresh one only gets a pointer to where training went on. (It cannot be closed
        # as KILLED: `mlflow run` then overwrites any status with FINISHED, as its check passes
        # RunStatus.is_terminated a string.)
        _point_launcher_run(env_run, resume_run_id)
        os.environ.pop("MLFLOW_RUN_ID")
    run_id = resume_run_id or env_run
    with mlflow.start_run(run_id=run_id or None, run_name=None if run_id else run_name) as run:
        mark_training_experiment(run.info.experiment_id)
        try:
            yield run
        finally:
            mlflow.flush_async_logging()


EXPERIMENT_KIND_TAG = vocab.EXPERIMENT_KIND_TAG
TRAINING_KIND = vocab.TRAINING_KIND  # MLflow 3's UI then opens the experiment on its runs, not GenAI traces


def mark_training_experiment(experiment_id: str) -> None:
    """Tag the experiment as model training (once), so the MLflow UI opens it on the runs table."""
    client = mlflow.MlflowClient()
    if client.get_experiment(experiment_id).tags.get(EXPERIMENT_KIND_TAG) != TRAINING_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)


def _buffer_async_logging() -> None:
    """Let MLflow's async logging thread wake as soon as the run flushes or ends.

    By default the thread waits on its queue with a one-second timeout before it checks for a flush or shutdown,
    and a run waits for it twice (the flush here, then `end_run`): about 1.9 s added to every run, measured with
    bench/train_overhead.py. With a buffering interval the thread sleeps on the stop event instead, so a flush
    returns at once; metrics are written in batches once a second meanwhile. (MLflow reads the value as an int.)
    """
    os.environ.setdefault("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", "1")


def _enable_system_metrics() -> None:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return
    # Its "Started/Stopping monitoring" INFO lines say nothing a person acts on: keep the console for kiln's lines.
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    mlflow.enable_system_metrics_logging()  # type: ignore[no-untyped-call]


def _point_launcher_run(launcher_run_id: str, resumed_run_id: str) -> None:
    client = mlflow.MlflowClient()
    client.set_tag(launcher_run_id, vocab.NOTE_TAG, f"Resumed training in run {resumed_run_id}.")
    for key, value in kiln_tags(resumed_into=resumed_run_id).items():
        client.set_tag(launcher_run_id, key, value)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
            continue
        text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
        flat[name] = text if len(text) <= _MAX_PARAM_CHARS else text[: _MAX_PARAM_CHARS - 3] + "..."
    return flat


def log_config(config: Any, extra: Mapping[str, Any] | None = None) -> None:
    """Log the resolved config as params and as `config.yaml`, so any run can be repeated.

    On resume the run already holds these params; MLflow refuses to change a param, so only new keys
    are added and the original values stand.
    """
    as_dict = dataclasses.asdict(config) if _is_dataclass_instance(config) else dict(config)
    log_new_params({**as_dict, **(extra or {})})
    mlflow.log_dict(as_dict, "config.yaml")


def _is_dataclass_instance(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def log_new_params(params: Mapping[str, Any], prefix: str = "") -> None:
    """Log (flattened) the params the active run does not hold yet; MLflow refuses to change a param, and
    `mlflow run` or an earlier session of a resumed run may have logged some already."""
    run = mlflow.active_run()
    assert run is not None, "log_new_params needs an active run"
    existing = mlflow.MlflowClient().get_run(run.info.run_id).data.params
    fresh = {k: v for k, v in flatten(params, prefix=prefix).items() if k not in existing}
    if fresh:
        mlflow.log_params(fresh)


def files_digest(paths: Iterable[Path], root: Path) -> str:
    """A content digest over files: relative names and bytes, in sorted order. 16 hex chars."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def log_dataset(
    source: str,
    digest: str,
    name: str,
    context: str = "training",
    profile: Mapping[str, Any] | None = None,
) -> None:
    """Record the dataset on the run (MLflow's Datasets panel) with its digest, source and a profile."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "can be interpreted in multiple ways" for local paths
        dataset_source = resolve_dataset_source(source)
    dataset = MetaDataset(source=dataset_source, name=name, digest=digest)  # type: ignore[abstract]
    tags = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in (profile or {}).items()}
    mlflow.log_input(dataset, context=context, tags=tags or None)
    if profile:
        mlflow.log_dict({"name": name, "source": source, "digest": digest, **profile}, f"datasets/{name}.json")


def log_epoch(metrics: Mapping[str, float], epoch: int) -> None:
    """Per-epoch metrics, `step=epoch`, written asynchronously."""
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=epoch, synchronous=False)


def kiln_tags(**values: str | None) -> dict[str, str]:
    """`kiln_tags(family="yolo", metric="best/mAP50-95")` -> {vocab.FAMILY: "yolo", ...}; None values are left out.
    A name not declared in core/vocab.py raises ValueError (`vocab.run_tag`)."""
    return {vocab.run_tag(key): str(value) for key, value in values.items() if value is not None}


def set_kiln_tags(**values: str | None) -> None:
    """Tag the active run with kiln's own tags (see `kiln_tags`)."""
    mlflow.set_tags(kiln_tags(**values))


def tag_family(family: str, ranking: Any, **extra: str | None) -> None:
    """The run's family and the ranking hint (`core.contract.Ranking`) promotion reads, plus family-specific tags."""
    set_kiln_tags(family=family, metric=ranking.metric, mode=ranking.mode, **extra)


def set_note(text: str) -> None:
    """The run's description in the MLflow UI."""
    mlflow.set_tag(vocab.NOTE_TAG, text)
