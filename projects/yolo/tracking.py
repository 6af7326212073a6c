"""Bridge ultralytics' trainer callbacks to the active MLflow run (kiln's replacement for ultralytics' own).

    python -m projects.yolo.train --preset safety_detection --epochs 2 --imgsz 128   # logs through this

ultralytics' MLflow integration is switched off in `projects.yolo.offline`: it would open a second run
in an experiment of its own and end it. This bridge writes into the run kiln's entry point holds:
- params: the resolved ultralytics args as `yolo.<arg>` (only keys the run lacks, so a resumed run keeps its
  originals), kiln's own options unprefixed (as `mlflow run` logs them too), `config.yaml` and `args.yaml`;
- per epoch, `step=epoch` (1-based, as in results.csv): train/val box, cls and dfl losses, precision,
  recall, mAP50, mAP50-95, fitness, lr per param group and epoch_seconds;
- each saved epoch: `weights/last.pt` and `results.csv`, so `--resume RUN_ID` can continue after a crash;
- after each epoch, the same metrics go to the epoch listeners (`projects.common.callbacks`); a stop request
  ends training after that epoch (ultralytics' own `trainer.stop`), and the final validation of best.pt still runs;
- at the end: the best model's metrics (`best/...`, from ultralytics' final validation of best.pt, the weights
  kiln exports: `best/mAP50-95` is the ranking metric), per-class AP, the plots ultralytics drew (confusion
  matrix, PR/F1 curves, validation batches with predicted boxes), `results.csv`, `args.yaml`, `weights/best.pt`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import mlflow

from projects.common import callbacks, tracking

PLOT_SUFFIXES = (".png", ".jpg")
# ultralytics' resolved args are params under this prefix. Unprefixed names belong to the entry point:
# `mlflow run` logs its MLproject params (epochs, lr0, device, ...) before training starts, and MLflow
# never lets a param change, so `lr0=0` (auto) and `yolo.lr0=0.01` can both be told apart.
ARGS_PREFIX = "yolo."
FINAL_KEYS = ("metrics/precision", "metrics/recall", "metrics/mAP50", "metrics/mAP50-95")


def metric_name(key: str) -> str:
    """ultralytics' `metrics/mAP50(B)` -> `metrics/mAP50`: MLflow refuses parentheses in metric names."""
    return key.replace("(B)", "").replace("(", "_").replace(")", "")


def safe_name(name: str) -> str:
    """A class name usable inside a metric name (MLflow allows letters, digits, `_-. /`)."""
    return re.sub(r"[^\w\-. ]", "_", name)


def clean(metrics: dict[str, Any]) -> dict[str, float]:
    return {metric_name(k): float(v) for k, v in metrics.items() if _is_number(v)}


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


class MlflowBridge:
    """Callbacks for one ultralytics trainer; `attach` registers them."""

    def __init__(
        self,
        names: list[str],
        config: Any = None,
        extra_params: dict[str, Any] | None = None,
        listeners: Iterable[callbacks.EpochListener] = (),
    ) -> None:
        self.listeners = list(listeners)  # told of every epoch (projects.common.callbacks)
        self.names = names  # class names, for per-class AP metric names
        self.config = config  # kiln's own config (a dataclass); its keys that ultralytics lacks become params too
        self.extra_params = extra_params or {}
        self.final: dict[str, float] = {}  # the best model's metrics from ultralytics' final evaluation
        self.epochs_logged = 0  # epochs whose metrics reached the run
        self._epoch_open = False  # set between on_train_epoch_end and on_fit_epoch_end of a real epoch
        self.stop_request: callbacks.StopRequest | None = None  # set when a listener stopped training

    def callbacks(self) -> dict[str, Callable[[Any], None]]:
        return {
            "on_pretrain_routine_end": self.on_pretrain_routine_end,
            "on_train_epoch_end": self.on_train_epoch_end,
            "on_model_save": self.on_model_save,
            "on_fit_epoch_end": self.on_fit_epoch_end,
            "on_train_end": self.on_train_end,
        }

    def attach(self, trainer: Any) -> None:
        for event, fn in self.callbacks().items():
            trainer.add_callback(event, fn)

    def on_pretrain_routine_end(self, trainer: Any) -> None:
        run = mlflow.active_run()
        assert run is not None, "the YOLO tracking bridge needs an active MLflow run"
        tracking.log_new_params(vars(trainer.args), prefix=ARGS_PREFIX)
        mlflow.log_dict(vars(trainer.args) | {"save_dir": str(trainer.save_dir)}, "args.yaml")
        if self.config is not None:
            tracking.log_config(self.config, extra=self.extra_params)

    def on_train_epoch_end(self, trainer: Any) -> None:
        self._epoch_open = True

    def on_model_save(self, trainer: Any) -> None:
        if Path(trainer.last).is_file():
            mlflow.log_artifact(str(trainer.last), artifact_path="weights")
        if trainer.fitness is not None and trainer.fitness == trainer.best_fitness and Path(trainer.best).is_file():
            mlflow.log_artifact(str(trainer.best), artifact_path="weights")  # resume needs the best so far too
        if Path(trainer.csv).is_file():
            mlflow.log_artifact(str(trainer.csv))

    def on_fit_epoch_end(self, trainer: Any) -> None:
        if not self._epoch_open:  # ultralytics calls this once more after training, for best.pt's validation
            self.final = clean(trainer.metrics)
            return
        self._epoch_open = False
        metrics = {
            **trainer.label_loss_items(trainer.tloss, prefix="train"),
            **trainer.metrics,
            **trainer.lr,
            "metrics/fitness": trainer.fitness if trainer.fitness is not None else float("nan"),
            "epoch_seconds": trainer.epoch_time,
        }
        tracking.log_epoch(clean(metrics), epoch=trainer.epoch + 1)
        self.epochs_logged += 1
        request = callbacks.report(trainer.epoch + 1, clean(metrics), self.listeners)
        if request is not None:
            self.stop_request = request
            trainer.stop = True  # ultralytics breaks out of its epoch loop after this callback

    def on_train_end(self, trainer: Any) -> None:
        if self.final:
            mlflow.log_metrics({k.replace("metrics/", "best/"): v for k, v in self.final.items() if k in FINAL_KEYS})
        self.log_per_class(trainer)
        save_dir = Path(trainer.save_dir)
        for path in sorted(save_dir.iterdir()):
            if path.suffix in PLOT_SUFFIXES:
                mlflow.log_artifact(str(path), artifact_path="plots")
        if Path(trainer.csv).is_file():
            mlflow.log_artifact(str(trainer.csv))
        for weights in (trainer.best, trainer.last):
            if Path(weights).is_file():
                mlflow.log_artifact(str(weights), artifact_path="weights")

    def per_class(self, trainer: Any) -> list[dict[str, Any]]:
        """AP50 / AP50-95 / precision / recall per class from the final validation of best.pt."""
        validator = getattr(trainer, "validator", None)
        metrics = getattr(validator, "metrics", None)
        box = getattr(metrics, "box", None)
        if box is None or not len(getattr(box, "ap_class_index", [])):
            return []
        rows = []
        for i, class_id in enumerate(box.ap_class_index):
            p, r, ap50, ap = box.class_result(i)
            name = self.names[int(class_id)] if int(class_id) < len(self.names) else str(class_id)
            rows.append({"class": name, "precision": p, "recall": r, "AP50": ap50, "AP50-95": ap})
        return [{k: (float(v) if k != "class" else v) for k, v in row.items()} for row in rows]

    def log_per_class(self, trainer: Any) -> None:
        rows = self.per_class(trainer)
        if not rows:
            return
        metrics = {}
        for row in rows:
            metrics[f"class/{safe_name(row['class'])}/AP50"] = row["AP50"]
            metrics[f"class/{safe_name(row['class'])}/AP50-95"] = row["AP50-95"]
        mlflow.log_metrics(clean(metrics))
        mlflow.log_dict({"classes": rows}, "per_class_ap.json")
        tracking.set_kiln_tags(per_class_ap50=json.dumps({r["class"]: round(r["AP50"], 4) for r in rows}))
