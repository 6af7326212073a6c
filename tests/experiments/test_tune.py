"""`kiln tune` end to end on skinmodel with a 60-row CSV: nested runs, pruning, a failing trial, one registered
version, the parent's summary, and resuming the study by name.

.venv/bin/python -m pytest tests/experiments/test_tune.py -q
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from experiments.tune import tune
from registry.significance import PARENT_TAG

SPACE = """
learning_rate: {type: float, low: 0.005, high: 0.5, log: true}
max_depth: {type: int, low: 1, high: 4}
subsample: {type: categorical, choices: [0.9, 1.5]}   # 1.5 passes the config's type, fails training's check
"""


@pytest.mark.slow
def test_search_with_pruning_failure_and_resume(
    mlflow_uri: str, kiln_home: Path, skin_sets: dict[str, str], tmp_path: Path
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    result = tune("skinmodel", str(space), 8, seed=3, study="t1", sets=skin_sets, pruner="median")
    client = MlflowClient(mlflow_uri)
    children = client.search_runs(["0"], filter_string=f"tags.`{PARENT_TAG}` = '{result.parent_run_id}'")
    trials = children  # one run per trial: the best one is registered from its own run
    states = sorted(r.data.tags["kiln.tune.state"] for r in trials)
    assert len(trials) == 8 and result.counts == {s: states.count(s) for s in set(states)}
    assert {"complete", "pruned", "failed"} <= set(states), states
    for run in trials:
        status = {"failed": "FAILED"}.get(run.data.tags["kiln.tune.state"], "FINISHED")
        assert run.info.status == status
        if run.data.tags["kiln.tune.state"] == "pruned":
            assert run.data.tags["kiln.stopped_by"].startswith("pruned by optuna")
            assert len(client.get_metric_history(run.info.run_id, "val_auc")) < 30  # stopped before 30 rounds
        if run.data.tags["kiln.tune.state"] == "failed":
            assert "subsample" in run.data.tags["kiln.error"]
    # only the best trial is registered, from its own run
    versions = client.search_model_versions("name = 'skinmodel'")
    assert [int(v.version) for v in versions] == [result.registered_version] == [1]
    assert versions[0].run_id == result.registered_run_id == result.trial_runs[result.best_trial]
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_auc"] == pytest.approx(result.best_value)
    assert parent.data.tags["kiln.tune.best_trial"] == str(result.best_trial)
    assert f"trial {result.best_trial} won" in parent.data.tags["mlflow.note.content"]
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)} | {
        a.path for a in client.list_artifacts(result.parent_run_id, "plots")
    }
    assert {
        "trials.csv",
        "best_params.json",
        "plots/optimization_history.png",
        "plots/param_importances.png",
    } <= artifacts
    # the same --study resumes: one more trial, same parent, the study now holds 9
    again = tune("skinmodel", str(space), 1, seed=3, study="t1", sets=skin_sets, register_best=False)
    assert again.parent_run_id == result.parent_run_id
    assert sum(again.counts.values()) == 9
    storage = f"sqlite:///{kiln_home / 'optuna.db'}"
    assert len(optuna.load_study(study_name="t1", storage=storage).trials) == 9


def test_bad_space_is_one_line_before_any_run(mlflow_uri: str, kiln_home: Path, tmp_path: Path) -> None:
    from kiln.cli import main

    space = tmp_path / "space.yaml"
    space.write_text("max_depth: {type: int, low: 4, high: 2}\n")
    result = CliRunner().invoke(main, ["tune", "skinmodel", "--space", str(space), "--trials", "2"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Error: " in result.output and "low (4) must be below high (2)" in result.output
    assert MlflowClient(mlflow_uri).search_runs(["0"]) == []


def test_unknown_family(mlflow_uri: str, kiln_home: Path, tmp_path: Path) -> None:
    from kiln.cli import main

    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: float, low: 0.1, high: 0.2}\n")
    result = CliRunner().invoke(main, ["tune", "nosuch", "--space", str(space)])
    assert result.exit_code == 1 and "unknown family or preset 'nosuch'" in result.output
