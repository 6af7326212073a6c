"""Epoch listeners: every step reaches every listener, and a StopTraining ends training cleanly after that step,
in the shared trainer and in XGBoost's round callback (the YOLO bridge: tests/projects/yolo/test_tracking.py)."""

import mlflow
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from projects.common import callbacks
from projects.common.callbacks import StopTraining, report, wants_export
from projects.common.trainer import FitConfig, Task, Trainer
from projects.skinmodel import model as xgbcore


class Recorder:
    def __init__(self, stop_at: int | None = None, export: bool = True) -> None:
        self.steps: list[tuple[int, dict[str, float]]] = []
        self.stop_at, self.export = stop_at, export

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self.steps.append((step, metrics))
        if step == self.stop_at:
            raise StopTraining("pruned", export=self.export)


def test_every_listener_sees_the_step_and_the_first_stop_wins():
    first, second = Recorder(stop_at=2), Recorder()
    assert report(1, {"val_loss": 1.0}, [first, second]) is None
    request = report(2, {"val_loss": 0.5}, [first, second])
    assert request is not None and (request.reason, request.step, request.export) == ("pruned", 2, True)
    assert [s for s, _ in second.steps] == [1, 2] and second.steps[1][1] == {"val_loss": 0.5}
    assert not hasattr(callbacks, "_LISTENERS") and report(3, {}, []) is None  # no listener held globally
    assert not wants_export(callbacks.StopRequest("pruned", 1, export=False)) and wants_export(None)


def test_a_listener_error_other_than_a_stop_propagates():
    class Broken:
        def on_step(self, step: int, metrics: dict[str, float]) -> None:
            raise RuntimeError("listener bug")

    with pytest.raises(RuntimeError, match="listener bug"):
        report(1, {"x": 1.0}, [Broken()])


def tiny_task() -> Task:
    torch.manual_seed(0)
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    return Task(nn.Linear(3, 1), nn.MSELoss(), loader, loader)


def test_trainer_stops_after_the_step_and_tags_the_run(mlflow_uri):
    listener, late = Recorder(stop_at=2), Recorder()
    with mlflow.start_run() as run:
        trainer = Trainer(tiny_task(), FitConfig(epochs=5, patience=0), torch.device("cpu"), listeners=[listener])
        trainer.add_listener(late)  # as ultralytics' add_callback
        state = trainer.fit()
    other = Trainer(tiny_task(), FitConfig(epochs=1, patience=0), torch.device("cpu"))
    assert other.listeners == []  # listeners belong to the trainer they were given to
    assert [s for s, _ in late.steps] == [1, 2]
    assert [s for s, _ in listener.steps] == [1, 2] and {"train_loss", "val_loss", "lr"} <= set(listener.steps[0][1])
    assert state.epoch == 2 and state.stopped_by == "pruned" and not state.stopped_early
    assert trainer.stop_request is not None and trainer.stop_request.step == 2
    finished = mlflow.get_run(run.info.run_id)
    assert finished.info.status == "FINISHED" and finished.data.tags["kiln.stopped_by"] == "pruned"
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_loss")]
    assert steps == [1, 2]


def test_trainer_without_listeners_runs_every_epoch(mlflow_uri):
    with mlflow.start_run():
        trainer = Trainer(tiny_task(), FitConfig(epochs=3, patience=0), torch.device("cpu"))
        assert trainer.fit().epoch == 3 and trainer.stop_request is None


def test_xgboost_stops_after_the_round_a_listener_stopped(mlflow_uri):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    listener = Recorder(stop_at=4, export=False)
    params = xgbcore.BoostParams(n_estimators=50, max_depth=2, early_stopping_rounds=0)
    logged: list[int] = []
    with mlflow.start_run() as run:
        model, stop = xgbcore.fit_listened(
            "binary", params, x[:90], y[:90], x[90:], y[90:], lambda m, s: logged.append(s), [listener]
        )
    assert logged == [0, 1, 2, 3, 4] and [s for s, _ in listener.steps] == logged
    assert {"val_auc", "val_logloss", "train_auc"} <= set(listener.steps[0][1])
    assert stop is not None and not stop.export and model.get_booster().num_boosted_rounds() == 5
    assert xgbcore.best_round(model) == 4
    assert mlflow.get_run(run.info.run_id).data.tags["kiln.stopped_by"] == "pruned"
