"""`kiln tune` paths beyond the default search: the hyperband pruner, `--workers 2` sharing one sqlite study,
and a PostgreSQL `--storage` resumed by a second `kiln tune` with the same `--study`.

.venv/bin/python -m pytest tests/experiments/test_tune_paths.py -q
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from cloud.localstack import Postgres
from registry.significance import PARENT_TAG

# learning rates from hopeless to fine: a trial far below the first one's curve is cut at an early rung
SPACE = "learning_rate: {type: float, low: 0.0005, high: 0.5, log: true}\nmax_depth: {type: int, low: 1, high: 3}\n"


def _tune(args: list[str]) -> str:
    from kiln.cli import main

    result = CliRunner().invoke(main, ["tune", "skinmodel", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _trial_runs(client: MlflowClient, parent: str) -> list:  # type: ignore[type-arg]
    return client.search_runs(["0"], filter_string=f"tags.`{PARENT_TAG}` = '{parent}'")


def _sets(skin_sets: dict[str, str]) -> list[str]:
    return [f"--set={k}={v}" for k, v in skin_sets.items()]


@pytest.mark.slow
def test_hyperband_prunes_a_trial_that_ends_finished(
    mlflow_uri: str, kiln_home: Path, skin_sets: dict[str, str], tmp_path: Path
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    args = ["--space", str(space), "--trials", "3", "--pruner", "hyperband", "--sampler", "random", "--seed", "0"]
    _tune([*args, "--study", "hb", "--no-register-best", *_sets(skin_sets)])
    study = optuna.load_study(study_name="hb", storage=f"sqlite:///{kiln_home / 'optuna.db'}")
    states = [t.state.name for t in study.trials]
    assert "PRUNED" in states and "COMPLETE" in states, states
    client = MlflowClient(mlflow_uri)
    for t in study.trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        if t.state.name == "PRUNED":
            assert run.info.status == "FINISHED"
            assert run.data.tags["kiln.tune.state"] == "pruned"
            assert run.data.tags["kiln.stopped_by"].startswith("pruned by optuna (hyperband pruner) at step")
            assert len(client.get_metric_history(run.info.run_id, "val_auc")) < 30  # cut before its 30 rounds


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(
    mlflow_uri: str, kiln_home: Path, skin_sets: dict[str, str], tmp_path: Path
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    args = ["--space", str(space), "--trials", "3", "--workers", "2", "--pruner", "none", "--seed", "1"]
    _tune([*args, "--study", "w2", "--storage", storage, "--no-register-best", *_sets(skin_sets)])
    trials = optuna.load_study(study_name="w2", storage=storage).trials
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(len(numbers))) and 3 <= len(numbers) <= 4  # a running worker may add one
    assert len({t.user_attrs["kiln.worker"] for t in trials}) == 2  # both processes ran trials
    assert {t.state.name for t in trials} == {"COMPLETE"}
    client = MlflowClient(mlflow_uri)
    parent = client.get_run(trials[0].user_attrs["mlflow_run_id"]).data.tags[PARENT_TAG]
    runs = _trial_runs(client, parent)
    assert sorted(int(r.data.tags["kiln.tune.trial"]) for r in runs) == numbers  # one child run per trial
    assert {r.data.tags["kiln.tune.worker"] for r in runs} == {t.user_attrs["kiln.worker"] for t in trials}


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """The same throwaway PostgreSQL cluster as tests/cloud's team stack (cloud.localstack), without S3 or server."""
    server = Postgres().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_postgres_storage_resumes_the_study(
    mlflow_uri: str, kiln_home: Path, skin_sets: dict[str, str], tmp_path: Path, postgres: Postgres
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    storage = postgres.uri.replace("postgresql://", "postgresql+psycopg://")  # psycopg 3, the declared driver
    args = ["--space", str(space), "--pruner", "none", "--study", "pg", "--storage", storage, "--no-register-best"]
    _tune([*args, "--trials", "2", *_sets(skin_sets)])
    _tune([*args, "--trials", "1", *_sets(skin_sets)])
    trials = optuna.load_study(study_name="pg", storage=storage).trials
    assert [t.number for t in trials] == [0, 1, 2] and {t.state.name for t in trials} == {"COMPLETE"}
    client = MlflowClient(mlflow_uri)
    parents = {client.get_run(t.user_attrs["mlflow_run_id"]).data.tags[PARENT_TAG] for t in trials}
    assert len(parents) == 1  # the second command resumed under the same parent run
    parent = client.get_run(parents.pop())
    assert parent.info.status == "FINISHED" and parent.data.metrics["tune/n_complete"] == 3
    assert "kiln-test-secret" not in parent.data.tags["kiln.tune.storage"]  # the password is not in the tag


@pytest.fixture
def tiny_safety(tmp_path: Path) -> Iterator[Path]:
    """8 generated 64x64 safety images; ultralytics turns on deterministic algorithms, restored afterwards."""
    import torch

    import projects.yolo.offline  # noqa: F401  (before ultralytics: kiln's offline settings)
    from data.samples import SampleRequest, make_sample

    before = torch.are_deterministic_algorithms_enabled()
    yield make_sample("safety", SampleRequest(tmp_path / "safety", count=8, size=64, val=0.25))
    torch.use_deterministic_algorithms(before)


@pytest.mark.slow
def test_yolo_preset_through_the_callback_bridge(
    mlflow_uri: str, kiln_home: Path, tiny_safety: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two trials are two trainings: the best one is exported and registered from its own run's best.pt."""
    from kiln.cli import main
    from projects.yolo.train import KilnDetectionTrainer

    trainings: list[str] = []
    fit = KilnDetectionTrainer.train

    def counted(self: KilnDetectionTrainer) -> None:
        trainings.append(str(self.args.lr0))
        fit(self)

    monkeypatch.setattr(KilnDetectionTrainer, "train", counted)
    space = tmp_path / "yolo.yaml"
    space.write_text("lr0: {type: float, low: 0.001, high: 0.02, log: true}\nepochs: 2\nimgsz: 32\nbatch: 4\n")
    args = ["--space", str(space), "--trials", "2", "--study", "y", "--seed", "0"]
    sets = [f"--set=data={tiny_safety}", "--set=device=cpu", "--set=register=always"]
    result = CliRunner().invoke(main, ["tune", "safety_detection", *args, *sets])
    assert result.exit_code == 0, result.output
    assert len(trainings) == 2  # registering the best trial trained nothing
    trials = optuna.load_study(study_name="y", storage=f"sqlite:///{kiln_home / 'optuna.db'}").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert [sorted(t.intermediate_values) for t in trials] == [[1, 2], [1, 2]]  # one report per epoch
    client = MlflowClient(mlflow_uri)
    for t in trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.tags["kiln.tune.state"] == "complete" and run.data.params["lr0"] == str(t.params["lr0"])
        assert len(client.get_metric_history(run.info.run_id, "metrics/mAP50-95")) == 2
    parent = client.get_run(run.data.tags[PARENT_TAG])
    assert parent.data.tags["kiln.metric"] == "best/mAP50-95" and "best/mAP50-95" in parent.data.metrics
    (version,) = client.search_model_versions("name = 'safety_detection'")
    best = client.get_run(version.run_id)
    assert best.data.tags["kiln.tune.trial"] == parent.data.tags["kiln.tune.best_trial"]
    assert version.run_id == parent.data.tags["kiln.tune.registered_run"] == parent.data.tags["kiln.tune.best_run"]
    assert best.data.tags["kiln.registered"] == "true" and best.data.tags["kiln.epochs_run"] == "2"
    runs = [t.user_attrs["mlflow_run_id"] for t in trials]
    plots = {r: {a.path for a in client.list_artifacts(r, "plots")} for r in runs}
    assert "plots/confusion_matrix.png" in plots.pop(version.run_id)  # drawn by the registering pass only
    assert plots == {r: set() for r in plots}


def test_first_worker_does_not_wait_for_a_worker_that_died() -> None:
    import multiprocessing
    import sys
    import time

    from experiments.tune import _wait_ready

    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=sys.exit, args=(3,))  # dies before it could open the study
    proc.start()
    began = time.monotonic()
    _wait_ready(ctx.Semaphore(0), [proc], limit=60)
    proc.join()
    assert proc.exitcode == 3 and time.monotonic() - began < 20
