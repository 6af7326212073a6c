"""skinmodel's booster checkpoint: a killed run resumes where its checkpoint stops and ends as an uninterrupted run
would; a finished run resumes without training and registers; a run without its checkpoint is one clear error.

.venv/bin/python -m pytest tests/projects/skinmodel/test_resume.py -q
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from projects.skinmodel import model as xgbcore
from projects.skinmodel.train import SkinConfig, main, train

KILL_AT = 9  # the round the simulated crash happens in


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 4))
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"])
    frame["label"] = (x[:, 0] - x[:, 2] + rng.normal(scale=0.7, size=120) > 0).astype(int)
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The rounds each XGBoost fit was asked to boost (an entry per training)."""
    asked: list[int] = []
    real = xgbcore.fit_listened

    def counted(task: str, params: xgbcore.BoostParams, *args: Any, **kwargs: Any) -> Any:
        asked.append(
            params.n_estimators - xgbcore.rounds_in(kwargs["resume"][1].history if kwargs.get("resume") else None)
        )
        return real(task, params, *args, **kwargs)

    monkeypatch.setattr(xgbcore, "fit_listened", counted)
    return asked


class Crash:
    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        if step == KILL_AT:
            raise RuntimeError(f"simulated crash in round {step}")


def _cfg(path: Path, **extra: Any) -> SkinConfig:
    # subsample and colsample 1: the continued rounds then draw no samples, so resume must match exactly
    fields: dict[str, Any] = {
        "n_estimators": 40,
        "max_depth": 2,
        "learning_rate": 0.3,
        "early_stopping_rounds": 8,
        "subsample": 1.0,
        "colsample_bytree": 1.0,
        "register": "always",
        **extra,
    }
    return SkinConfig(data=str(path), target="label", **fields)  # fmt: skip


@pytest.mark.slow
def test_a_killed_run_continues_from_its_booster(
    mlflow_uri: str, csv_path: Path, fits: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILN_CHECKPOINT_EVERY_SECONDS", "0")  # a checkpoint after every round, as on SageMaker
    whole = train(_cfg(csv_path, model_name="whole", register="never"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(_cfg(csv_path, model_name="killed"), listeners=(Crash(),))
    client = mlflow.MlflowClient()
    (killed,) = client.search_runs(["0"], "tags.`mlflow.runName` = 'killed'")
    assert killed.info.status == "FAILED"

    resumed = train(_cfg(csv_path, model_name="killed", resume=killed.info.run_id))
    assert fits == [40, 40, 40 - KILL_AT]  # the resumed session boosts only the rounds the checkpoint lacks
    run = client.get_run(killed.info.run_id)
    assert run.info.status == "FINISHED" and len(client.search_runs(["0"])) == 2
    steps = {m.step for m in client.get_metric_history(run.info.run_id, "val_logloss")}
    assert steps == set(range(int(whole["best_iteration"]) + 1 + 8))  # every round once, up to early stopping
    for key in ("best_val_auc", "best_val_logloss", "best_iteration", "n_trees", "val_accuracy"):
        assert resumed[key] == pytest.approx(whole[key]), key
    version = client.get_model_version("killed", "1")
    assert version.run_id == run.info.run_id


@pytest.mark.slow
def test_a_finished_run_registers_without_training(mlflow_uri: str, csv_path: Path, fits: list[int]) -> None:
    first = train(_cfg(csv_path, register="never"))
    (run,) = mlflow.search_runs(["0"], output_format="list")
    assert run.data.tags["kiln.registered"] == "false" and "checkpoints" in {
        a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)
    }
    again = train(_cfg(csv_path, resume=run.info.run_id))
    assert fits == [40]  # the resume trained nothing
    assert again["registered_version"] == 1 and again["best_val_auc"] == first["best_val_auc"]
    version = mlflow.MlflowClient().get_model_version("skinmodel", "1")
    assert version.run_id == run.info.run_id
    tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["kiln.registered"] == "true" and tags["kiln.registered_version"] == "1"


def test_resuming_a_run_without_a_booster_is_one_clear_line(mlflow_uri: str, csv_path: Path) -> None:
    with mlflow.start_run() as other:  # a run with no checkpoint (another family's, or a deleted one)
        mlflow.set_tag("kiln.family", "edgnet")
    args = ["--data", str(csv_path), "--target", "label", "--resume", other.info.run_id]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"cannot resume run {other.info.run_id!r}" in result.output and "'booster' checkpoint" in result.output
    assert mlflow.MlflowClient().get_run(other.info.run_id).info.status == "FINISHED"  # left as it was
