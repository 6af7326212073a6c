"""The ultralytics -> MLflow bridge, driven by a stand-in trainer against a real sqlite store.

.venv/bin/python -m pytest tests/projects/yolo/test_tracking.py -q
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from projects.common.callbacks import StopTraining
from projects.yolo.tracking import MlflowBridge, metric_name


class FakeTrainer:
    """The attributes ultralytics' DetectionTrainer exposes to callbacks, with fixed numbers."""

    def __init__(self, save_dir: Path) -> None:
        self.args = types.SimpleNamespace(imgsz=64, epochs=2, optimizer="auto", mosaic=1.0)
        self.save_dir = save_dir
        (save_dir / "weights").mkdir(parents=True)
        self.last, self.best, self.csv = (
            save_dir / "weights/last.pt",
            save_dir / "weights/best.pt",
            save_dir / "results.csv",
        )
        self.epoch, self.epoch_time, self.tloss = 0, 1.5, [1.0, 2.0, 3.0]
        self.lr = {"lr/pg0": 0.01, "lr/pg1": 0.01, "lr/pg2": 0.02}
        self.metrics: dict[str, float] = {}
        self.fitness: float | None = None
        self.best_fitness: float | None = None
        self.callbacks: dict[str, list[Any]] = {}

    def add_callback(self, event: str, fn: Any) -> None:
        self.callbacks.setdefault(event, []).append(fn)

    def fire(self, event: str) -> None:
        for fn in self.callbacks[event]:
            fn(self)

    def label_loss_items(self, loss: list[float], prefix: str) -> dict[str, float]:
        return {f"{prefix}/{k}": v for k, v in zip(("box_loss", "cls_loss", "dfl_loss"), loss, strict=True)}

    def run_epoch(self, epoch: int, map50: float) -> None:
        self.epoch = epoch
        self.fire("on_train_epoch_end")
        self.metrics = {"metrics/precision(B)": 0.5, "metrics/mAP50(B)": map50, "metrics/mAP50-95(B)": map50 / 2,
                        "val/box_loss": 1.0}  # fmt: skip
        self.fitness = map50
        self.best_fitness = max(self.best_fitness or 0.0, map50)
        for path in (self.last, self.best):
            path.write_bytes(b"weights")
        self.csv.write_text("epoch\n")
        self.fire("on_model_save")
        self.fire("on_fit_epoch_end")


def test_metric_names_are_mlflow_safe() -> None:
    assert metric_name("metrics/mAP50-95(B)") == "metrics/mAP50-95"
    assert metric_name("metrics/precision(M)") == "metrics/precision_M"


def test_epochs_final_eval_and_artifacts(mlflow_uri: str, tmp_path: Path) -> None:
    trainer = FakeTrainer(tmp_path / "train")
    (trainer.save_dir / "confusion_matrix.png").write_bytes(b"png")
    bridge = MlflowBridge(["smoke", "fire"], config={"preset": "safety_detection", "mosaic": 0.0})
    bridge.attach(trainer)
    with mlflow.start_run() as run:
        mlflow.log_param("yolo.imgsz", "64")  # a resumed run already holds params: those stay, no error
        trainer.fire("on_pretrain_routine_end")
        trainer.run_epoch(0, 0.2)
        trainer.run_epoch(1, 0.6)
        trainer.epoch = 2  # ultralytics' final validation of best.pt: on_fit_epoch_end without a train epoch
        trainer.metrics = {"metrics/mAP50(B)": 0.61, "metrics/mAP50-95(B)": 0.3}
        trainer.fire("on_fit_epoch_end")
        trainer.validator = types.SimpleNamespace(metrics=types.SimpleNamespace(box=FakeBox()))
        trainer.fire("on_train_end")
    mlflow.flush_async_logging()
    client = mlflow.MlflowClient()
    history = client.get_metric_history(run.info.run_id, "metrics/mAP50")
    assert [(m.step, m.value) for m in history] == [(1, 0.2), (2, 0.6)]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/cls_loss")] == [1, 2]
    data = client.get_run(run.info.run_id).data
    assert data.metrics["best/mAP50"] == 0.61 and data.metrics["class/fire/AP50"] == 0.7
    assert data.params["yolo.optimizer"] == "auto" and data.params["preset"] == "safety_detection"
    assert (data.params["yolo.mosaic"], data.params["mosaic"]) == ("1.0", "0.0")  # resolved vs kiln's config
    artifacts = {a.path for p in (None, "weights", "plots") for a in client.list_artifacts(run.info.run_id, p)}
    assert {"weights/last.pt", "weights/best.pt", "plots/confusion_matrix.png", "results.csv"} <= artifacts
    assert "per_class_ap.json" in artifacts and bridge.epochs_logged == 2


class FakeBox:
    ap_class_index = np.array([0, 1])

    def class_result(self, i: int) -> tuple[float, float, float, float]:
        return (0.5, 0.4, [0.3, 0.7][i], [0.1, 0.35][i])


class StopAt:
    def __init__(self, step: int) -> None:
        self.step, self.seen = step, []

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self.seen.append((step, metrics["metrics/mAP50"]))
        if step == self.step:
            raise StopTraining("pruned")


def test_listeners_see_each_epoch_and_can_stop_training(mlflow_uri: str, tmp_path: Path) -> None:
    trainer = FakeTrainer(tmp_path / "train")
    trainer.stop = False
    listener = StopAt(2)
    bridge = MlflowBridge(["smoke", "fire"], listeners=[listener])
    bridge.attach(trainer)
    with mlflow.start_run() as run:
        trainer.fire("on_pretrain_routine_end")
        trainer.run_epoch(0, 0.2)
        assert trainer.stop is False and bridge.stop_request is None
        trainer.run_epoch(1, 0.6)
        assert trainer.stop is True  # ultralytics leaves its epoch loop after this callback
        trainer.epoch = 2  # the final validation of best.pt still reaches the run, not the listeners
        trainer.metrics = {"metrics/mAP50(B)": 0.61, "metrics/mAP50-95(B)": 0.3}
        trainer.fire("on_fit_epoch_end")
        trainer.fire("on_train_end")
    assert listener.seen == [(1, 0.2), (2, 0.6)]
    assert bridge.stop_request is not None and bridge.stop_request.step == 2
    data = mlflow.get_run(run.info.run_id).data
    assert data.tags["kiln.stopped_by"] == "pruned" and data.metrics["best/mAP50-95"] == 0.3
