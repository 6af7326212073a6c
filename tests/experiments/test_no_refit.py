"""`kiln tune` and `kiln cv` register from the trial's or fold's own run: a 2-trial study is 2 trainings, a 3-fold cv
3, the version's source run is the trial or fold that trained it, trials decode the data once and draw no figures.
edgnet (epochs counted) and skinmodel (XGBoost trainings counted) here; YOLO in test_tune_paths.py.

.venv/bin/python -m pytest tests/experiments/test_no_refit.py -q
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from registry.significance import PARENT_TAG

SPACE = "lr: {type: float, low: 0.001, high: 0.01, log: true}\n"


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the epochs the shared trainer runs, and the decodes of the drawings folder."""
    from projects.common.trainer import Trainer
    from projects.edgnet import data as edgdata

    counts = {"epochs": 0, "decodes": 0}
    run_epoch, load_folder = Trainer._run_epoch, edgdata.load_folder

    def epoch(self: Trainer, n: int) -> dict[str, float]:
        counts["epochs"] += 1
        return run_epoch(self, n)

    def decode(*args: Any, **kwargs: Any) -> list[Any]:
        counts["decodes"] += 1
        return load_folder(*args, **kwargs)

    monkeypatch.setattr(Trainer, "_run_epoch", epoch)
    monkeypatch.setattr(edgdata, "load_folder", decode)
    return counts


@pytest.fixture
def edg_sets(tmp_path: Path) -> dict[str, str]:
    from data.drawings import generate

    data = generate(tmp_path / "drawings", 9, 32, 0)
    return {"data": str(data), "epochs": "2", "img_size": "32", "batch_size": "4", "base_channels": "4",
            "patience": "0", "register": "always"}  # fmt: skip


def _artifacts(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


@pytest.mark.slow
def test_a_study_of_two_trials_is_two_trainings(
    mlflow_uri: str, kiln_home: Path, tmp_path: Path, edg_sets: dict[str, str], counted: dict[str, int]
) -> None:
    from experiments.tune import tune

    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    result = tune("edgnet", str(space), 2, pruner="none", sampler="random", seed=0, sets=edg_sets)
    assert counted["epochs"] == 2 * 2  # two trials of two epochs; registering trained nothing
    assert counted["decodes"] == 2  # once for the trials, once for the registering pass
    client = MlflowClient()
    children = client.search_runs(["0"], filter_string=f"tags.`{PARENT_TAG}` = '{result.parent_run_id}'")
    assert len(children) == 2  # the two trials; none trained again to register
    best = result.trial_runs[result.best_trial]  # type: ignore[index]
    versions = client.search_model_versions("name = 'edgnet'")
    assert [v.run_id for v in versions] == [best] == [result.registered_run_id]
    parent = client.get_run(result.parent_run_id).data.tags
    assert parent["kiln.tune.registered_run"] == best
    kept = _artifacts(client, best)
    assert {"loss_curve.png", "overlays", "augment"} <= kept  # the registered trial draws its figures
    other = next(r.info.run_id for r in children if r.info.run_id != best)
    assert not {"loss_curve.png", "overlays", "augment"} & _artifacts(client, other)  # the other one draws none
    assert "checkpoints" in _artifacts(client, other)  # but keeps its weights
    assert client.get_run(best).info.status == "FINISHED"


@pytest.mark.slow
def test_three_folds_are_three_trainings(mlflow_uri: str, edg_sets: dict[str, str], counted: dict[str, int]) -> None:
    from experiments.cv import cv

    result = cv("edgnet", folds=3, sets=edg_sets)
    assert counted["epochs"] == 3 * 2
    assert counted["decodes"] == 1  # the folds and the registering pass share one decode
    client = MlflowClient()
    children = client.search_runs(["0"], filter_string=f"tags.`{PARENT_TAG}` = '{result.parent_run_id}'")
    assert sorted(r.data.tags["mlflow.runName"] for r in children) == ["fold-0", "fold-1", "fold-2"]
    versions = client.search_model_versions("name = 'edgnet'")
    assert [v.run_id for v in versions] == [result.registered_run_id]
    assert result.registered_run_id in result.child_runs
    assert client.get_run(result.registered_run_id).data.tags["kiln.cv.role"] == "registered"


@pytest.mark.slow
def test_a_stopped_run_resumes_without_training(
    mlflow_uri: str, edg_sets: dict[str, str], counted: dict[str, int]
) -> None:
    """Early stopping is recorded in last.pt: resuming the run exports it instead of training on."""
    from experiments.runs import create_child, finish_in_run, train_in_run

    client = MlflowClient()
    parent = client.create_run("0").info.run_id
    child = create_child(client, parent, "early", {})
    sets = {**edg_sets, "epochs": "6", "patience": "1", "lr": "1e-7"}  # no improvement after epoch 1
    train_in_run(client, child, "edgnet", sets)
    trained = counted["epochs"]
    assert 2 <= trained < 6
    final = finish_in_run(client, child, "edgnet", sets)
    assert counted["epochs"] == trained and final["registered_version"] == 1


@pytest.fixture
def boosted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """One entry per XGBoost training skinmodel runs: the run it trained in."""
    import mlflow

    from projects.skinmodel import model as xgbcore

    runs: list[str] = []
    fit = xgbcore.fit_listened

    def counted(*args: Any, **kwargs: Any) -> Any:
        runs.append(mlflow.active_run().info.run_id)  # type: ignore[union-attr]
        return fit(*args, **kwargs)

    monkeypatch.setattr(xgbcore, "fit_listened", counted)
    return runs


@pytest.mark.slow
def test_skinmodel_three_folds_are_three_trainings(
    mlflow_uri: str, skin_sets: dict[str, str], boosted: list[str]
) -> None:
    from experiments.cv import cv

    result = cv("skinmodel", folds=3, sets={**skin_sets, "register": "always"})
    assert sorted(boosted) == sorted(result.child_runs) and len(boosted) == 3  # one training per fold, none after
    client = MlflowClient()
    children = client.search_runs(["0"], filter_string=f"tags.`{PARENT_TAG}` = '{result.parent_run_id}'")
    assert sorted(r.data.tags["mlflow.runName"] for r in children) == ["fold-0", "fold-1", "fold-2"]
    (version,) = client.search_model_versions("name = 'skinmodel'")
    assert version.run_id == result.registered_run_id and result.registered_run_id in result.child_runs
    run = client.get_run(version.run_id)
    assert run.data.tags["kiln.cv.role"] == "registered" and run.data.tags["kiln.registered"] == "true"
    assert run.data.tags["kiln.registered_version"] == str(version.version) and run.info.status == "FINISHED"
    assert "feature_importance.png" in _artifacts(client, version.run_id)  # the registering pass draws its figure
    other = next(c for c in result.child_runs if c != version.run_id)
    assert "feature_importance.png" not in _artifacts(client, other)
    assert client.get_run(result.parent_run_id).data.tags["kiln.cv.registered_run"] == version.run_id


@pytest.mark.slow
def test_a_skinmodel_study_of_two_trials_is_two_trainings(
    mlflow_uri: str, kiln_home: Path, tmp_path: Path, skin_sets: dict[str, str], boosted: list[str]
) -> None:
    from experiments.tune import tune

    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {type: float, low: 0.05, high: 0.5, log: true}\n")
    sets = {**skin_sets, "register": "always"}
    result = tune("skinmodel", str(space), 2, pruner="none", sampler="random", seed=0, sets=sets)
    assert sorted(boosted) == sorted(result.trial_runs.values()) and len(boosted) == 2
    best = result.trial_runs[result.best_trial]  # type: ignore[index]
    client = MlflowClient()
    (version,) = client.search_model_versions("name = 'skinmodel'")
    assert version.run_id == best == result.registered_run_id
    assert client.get_run(result.parent_run_id).data.tags["kiln.tune.registered_run"] == best
    trial = client.get_run(best)
    assert trial.data.tags["kiln.tune.trial"] == str(result.best_trial) and trial.data.tags["kiln.registered"] == "true"
    assert trial.data.metrics["best_val_auc"] == pytest.approx(result.best_value)  # the value the study ranked
