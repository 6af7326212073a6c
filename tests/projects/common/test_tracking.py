import mlflow
import pytest

from projects.common import tracking


def test_start_run_joins_the_run_mlflow_run_created(mlflow_uri, monkeypatch):
    created = mlflow.MlflowClient().create_run("0").info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", created)
    with tracking.start_run(run_name="ignored") as run:
        tracking.log_epoch({"loss": 1.0}, 1)
        tracking.log_epoch({"loss": 0.5}, 2)
    assert run.info.run_id == created
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(created, "loss")]
    assert steps == [1, 2]


def test_log_config_keeps_original_params_on_resume(mlflow_uri):
    with tracking.start_run() as run:
        tracking.log_config({"epochs": 3, "nested": {"lr": 0.1}, "names": ["a", "b"]})
    with tracking.start_run(resume_run_id=run.info.run_id):
        tracking.log_config({"epochs": 5, "new": 1})
    params = mlflow.MlflowClient().get_run(run.info.run_id).data.params
    assert params == {"epochs": "3", "nested.lr": "0.1", "names": '["a", "b"]', "new": "1"}


def test_files_digest_follows_content_and_names(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    first = tracking.files_digest([tmp_path / "a.txt"], tmp_path)
    (tmp_path / "a.txt").write_text("y")
    assert tracking.files_digest([tmp_path / "a.txt"], tmp_path) != first
    assert len(first) == 16


def test_log_dataset_records_digest_and_source(tmp_path, mlflow_uri):
    with tracking.start_run() as run:
        tracking.log_dataset(str(tmp_path), "abc123", "drawings", profile={"images": 4})
    inputs = mlflow.MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    assert [(d.dataset.name, d.dataset.digest) for d in inputs] == [("drawings", "abc123")]
    assert str(tmp_path) in inputs[0].dataset.source


@pytest.mark.parametrize("value", [1, "x"])
def test_flatten_stringifies(value):
    assert tracking.flatten({"a": {"b": value}}) == {"a.b": str(value)}
