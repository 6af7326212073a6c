"""The `promote` MLproject entry point: empty strings mean "not given", and `mlflow run` leaves an audit run.

.venv/bin/python -m pytest tests/registry/test_promote.py -q
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from registry.promote import main

MakeVersion = Callable[..., int]  # the `make_version` fixture of tests/registry/conftest.py
ALL_EMPTY = ["--version", "", "--run-id", "", "--metric", "", "--mode", "", "--min", "", "--max", "", "--reason", ""]


def test_empty_parameters_mean_not_given(client: MlflowClient, make_version: MakeVersion) -> None:
    make_version("seg", {"val_iou": 0.7})
    result = CliRunner().invoke(main, ["--model", "seg", *ALL_EMPTY, "--version", "1", "--force", "false"])
    assert result.exit_code == 0, result.output
    assert client.get_registered_model("seg").aliases == {"production": 1}


def test_bad_parameters_are_named(make_version: MakeVersion) -> None:
    make_version("seg", {"val_iou": 0.7})
    result = CliRunner().invoke(main, ["--model", "seg", "--version", "1", "--min", "high"])
    assert result.exit_code == 2 and "'high' is not a number" in result.output
    result = CliRunner().invoke(main, ["--model", "seg", *ALL_EMPTY])
    assert result.exit_code == 2 and "exactly one of --version or --run" in result.output


def test_a_refusal_is_written_to_the_launching_run(
    client: MlflowClient, make_version: MakeVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_version("seg", {"val_iou": 0.7})
    audit = client.create_run("0").info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", audit)
    result = CliRunner().invoke(main, ["--model", "seg", "--version", "1", "--metric", "val_iou", "--min", "0.9"])
    assert result.exit_code == 1
    tags = client.get_run(audit).data.tags
    assert tags["kiln.promotion.outcome"] == "refused" and "below --min 0.9" in tags["mlflow.note.content"]


@pytest.mark.slow
def test_mlflow_run_promotes_and_records_the_outcome(
    client: MlflowClient, make_version: MakeVersion, registry_uri: str, repo_root: Path
) -> None:
    make_version("seg", {"val_iou": 0.7})
    make_version("seg", {"val_iou": 0.8})
    client.set_registered_model_alias("seg", "production", "1")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": registry_uri,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    params = ["model=seg", "version=2", "metric=val_iou", "min=0.75", "reason=new data, it's better"]
    command = [sys.executable, "-m", "mlflow", "run", ".", "-e", "promote", "--env-manager", "local"]
    for param in params:
        command += ["-P", param]
    done = subprocess.run(command, cwd=repo_root, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert client.get_registered_model("seg").aliases == {"production": 2}
    assert client.get_model_version("seg", "2").tags["reason"] == "new data, it's better"
    (audit,) = client.search_runs(["0"], "tags.`kiln.promotion.model` = 'seg'")
    assert audit.data.tags["kiln.promotion.outcome"] == "promoted" and audit.info.status == "FINISHED"
    assert "promoted seg production: v1 -> v2" in audit.data.tags["mlflow.note.content"]
