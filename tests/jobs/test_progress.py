"""Progress from MLflow metric history: distinct epoch steps, system metrics left out.

.venv/bin/python -m pytest tests/jobs/test_progress.py -q
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mlflow import MlflowClient

from jobs.progress import Curve, Progress, RunReader, epochs_done, logged_epochs


def test_epochs_done_counts_distinct_steps_from_either_base() -> None:
    zero_based = {"train/box_loss": Curve([0, 1, 2], [3.0, 2.0, 1.0]), "lr/pg0": Curve([0, 1, 2], [0.1] * 3)}
    one_based = {"train_loss": Curve([1, 2], [1.0, 0.5]), "val_iou": Curve([1, 2], [0.2, 0.4])}
    with_system = {"train_loss": Curve([1], [1.0]), "system/cpu_utilization": Curve(list(range(40)), [1.0] * 40)}
    assert (epochs_done(zero_based), epochs_done(one_based), epochs_done(with_system)) == (3, 2, 1)
    assert epochs_done({}) is None


def test_percent_is_capped_and_absent_without_a_total() -> None:
    assert Progress(3, 4, {}, "RUNNING").percent == 75.0
    assert Progress(5, 4, {}, "RUNNING").percent == 100.0
    assert Progress(3, None, {}, "RUNNING").percent is None


def test_reader_reads_a_real_run(tmp_path: Path, make_store: Callable[[Path], Path]) -> None:
    db = make_store(tmp_path)
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    run_id = client.create_run("0").info.run_id
    for epoch, loss in [(1, 0.9), (2, 0.5), (2, 0.4)]:  # a repeated step keeps the later value
        client.log_metric(run_id, "val_loss", loss, step=epoch)
    client.log_metric(run_id, "system/memory_usage_megabytes", 100.0, step=7)
    reader = RunReader(uri, ttl=0)
    assert reader.curves(run_id) == {"val_loss": Curve([1, 2], [0.9, 0.4])}
    assert set(reader.curves(run_id, include_system=True)) == {"val_loss", "system/memory_usage_megabytes"}
    p = reader.progress(run_id, total_epochs=4)
    assert (p.current_epoch, p.percent, p.metrics, p.run_status) == (2, 50.0, {"val_loss": 0.4}, "RUNNING")
    client.log_param(run_id, "epochs", "8")  # a run whose epoch count came from its config file
    assert reader.progress(run_id, total_epochs=None).percent == 25.0


def test_phase_and_eta_follow_the_run(tmp_path: Path, make_store: Callable[[Path], Path]) -> None:
    client = MlflowClient(f"sqlite:///{make_store(tmp_path)}")
    run_id = client.create_run("0").info.run_id
    for epoch, ms in [(1, 10_000), (2, 12_000), (3, 14_000)]:  # 2 s an epoch
        client.log_metric(run_id, "val_iou", 0.5, timestamp=ms, step=epoch)
    client.set_tag(run_id, "kiln.metric", "best_val_iou")
    reader = RunReader(client.tracking_uri, ttl=0)
    p = reader.progress(run_id, total_epochs=5)
    assert (p.phase, p.eta_seconds, p.task_metric) == ("training", 4.0, "best_val_iou")
    assert reader.progress(run_id, total_epochs=3).phase == "finishing"  # epochs over, nothing tagged yet
    client.set_tag(run_id, "kiln.phase", "registering")
    p = reader.progress(run_id, total_epochs=3)
    assert (p.phase, p.eta_seconds) == ("registering", None)
    client.set_terminated(run_id, "FINISHED")
    assert reader.progress(run_id, total_epochs=3).phase is None


def test_a_config_file_epoch_count_comes_from_the_run_params() -> None:
    assert logged_epochs({"epochs": "30"}) == 30
    assert logged_epochs({"train.epochs": "12", "lr": "0.1"}) == 12
    assert logged_epochs({"a.epochs": "1", "b.epochs": "2"}) is None  # ambiguous
    assert logged_epochs({"epochs": ""}) is None and logged_epochs({}) is None
