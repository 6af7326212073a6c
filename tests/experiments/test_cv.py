"""`kiln cv` end to end: a 3-fold and a 3-seed skinmodel run on a 60-row CSV, statistics on the parent, and
the registered version's statistics found by the promotion significance gate.

.venv/bin/python -m pytest tests/experiments/test_cv.py -q
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from experiments.cv import cv
from registry.significance import sample_for

STATS = ("mean", "std", "n", "ci95_low", "ci95_high")


@pytest.mark.slow
def test_three_folds_register_the_fold_closest_to_the_mean(mlflow_uri: str, skin_sets: dict[str, str]) -> None:
    result = cv("skinmodel", folds=3, sets=skin_sets)
    client = MlflowClient(mlflow_uri)
    parent = client.get_run(result.parent_run_id)
    assert {f"cv/best_val_auc/{s}" for s in STATS} <= set(parent.data.metrics)
    assert parent.data.metrics["cv/best_val_auc/n"] == 3
    values = json.loads(parent.data.tags["kiln.cv.values.best_val_auc"])
    assert values == pytest.approx(result.values) and len(values) == 3
    assert parent.data.tags["kiln.cv.kind"] == "folds"
    folds = client.search_runs(["0"], filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    rows = {r.data.tags["mlflow.runName"]: r for r in folds}
    assert set(rows) == {"fold-0", "fold-1", "fold-2"}  # the registered fold is one of them, not trained again
    assert result.registered_run_id == rows[_closest(values)].info.run_id
    assert [rows[f"fold-{i}"].data.params["val_rows"] for i in range(3)] == ["20", "20", "20"]
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "plots")}
    assert artifacts == {"plots/cv_best_val_auc.png"}
    versions = client.search_model_versions("name = 'skinmodel'")
    assert len(versions) == 1 and versions[0].run_id == result.registered_run_id
    sample = sample_for(client, result.registered_run_id, "best_val_auc")  # what kiln promote --significance reads
    assert not isinstance(sample, str) and sample.values == pytest.approx(values)


def _closest(values: list[float]) -> str:
    mean = sum(values) / len(values)
    return f"fold-{min(range(len(values)), key=lambda i: abs(values[i] - mean))}"


@pytest.mark.slow
def test_three_seeds_without_registering(mlflow_uri: str, skin_sets: dict[str, str]) -> None:
    from kiln.cli import main

    sets = [f"--set={k}={v}" for k, v in {**skin_sets, "subsample": "0.6"}.items()]
    out = CliRunner().invoke(main, ["cv", "skinmodel", "--seeds", "0,1,2", "--no-register", "--json", *sets])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output[out.output.index("{\n") :])
    client = MlflowClient(mlflow_uri)
    parent = client.get_run(result["parent_run_id"])
    assert parent.data.tags["kiln.cv.kind"] == "seeds" and result["registered_version"] is None
    children = client.search_runs(["0"], filter_string=f"tags.`mlflow.parentRunId` = '{result['parent_run_id']}'")
    assert sorted(r.data.params["seed"] for r in children) == ["0", "1", "2"]
    assert client.search_model_versions("name = 'skinmodel'") == []


def test_flags_are_checked(mlflow_uri: str) -> None:
    from kiln.cli import main

    both = CliRunner().invoke(main, ["cv", "skinmodel", "--folds", "3", "--seeds", "0,1"])
    assert both.exit_code == 1 and "exactly one of --folds K or --seeds" in both.output
    one = CliRunner().invoke(main, ["cv", "skinmodel", "--seeds", "4"])
    assert one.exit_code == 1 and "at least two different seeds" in one.output
    hookless = CliRunner().invoke(main, ["cv", "cr_recon", "--folds", "3"])
    assert hookless.exit_code == 1 and "cr_recon has no fold hook yet" in hookless.output


@pytest.mark.slow
def test_refit_registers_a_model_trained_on_all_data(mlflow_uri: str, skin_sets: dict[str, str]) -> None:
    from kiln.cli import main

    sets = [f"--set={k}={v}" for k, v in {**skin_sets, "register": "always"}.items()]
    out = CliRunner().invoke(main, ["cv", "skinmodel", "--folds", "2", "--refit", "--json", *sets])
    assert out.exit_code == 0, out.output
    result = json.JSONDecoder().raw_decode(out.output, out.output.index("{\n"))[0]  # mlflow's stderr lines follow
    client = MlflowClient(mlflow_uri)
    versions = client.search_model_versions("name = 'skinmodel'")
    assert [int(v.version) for v in versions] == [result["registered_version"]] == [1]
    refit = client.get_run(versions[0].run_id)
    assert refit.data.tags["mlflow.runName"] == "refit" and refit.data.tags["kiln.cv.role"] == "refit"
    assert refit.data.tags["mlflow.parentRunId"] == result["parent_run_id"]
    assert int(refit.data.params["val_rows"]) < 30  # the family's usual split, not a 2-fold's half
    parent = client.get_run(result["parent_run_id"])
    assert parent.data.tags["kiln.cv.registered_run"] == refit.info.run_id
    assert parent.data.metrics["cv/best_val_auc/n"] == 2
    sample = sample_for(client, refit.info.run_id, "best_val_auc")  # the gate finds the parent's statistics
    assert not isinstance(sample, str) and len(sample.values) == 2
