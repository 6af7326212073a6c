"""End to end: `mlflow run . -e skinmodel` against a sqlite store; bad input stops before any run."""

import json

import mlflow
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import xgboost as xgb
from click.testing import CliRunner

from projects.skinmodel.train import main


@pytest.fixture
def three_class_csv(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 4))
    label = np.array(["setosa", "versicolor", "virginica"])[np.digitize(x[:, 0] + x[:, 1], [-0.6, 0.6])]
    frame = pd.DataFrame(x, columns=["sepal length", "sepal width", "petal length", "petal width"])
    frame.insert(0, "id", [f"row{i}" for i in range(90)])
    frame["species"] = label
    path = tmp_path / "flowers.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_mlflow_run_tracks_rounds_and_registers_matching_onnx(mlflow_run, three_class_csv):
    params = {"data": three_class_csv, "target": "species", "drop_columns": "id", "n_estimators": 15,
              "max_depth": 2, "learning_rate": 0.3, "early_stopping_rounds": 0, "model_name": "skin_test"}  # fmt: skip
    output = mlflow_run("skinmodel", params)
    assert "skinmodel multiclass on 4 features" in output
    (run,) = mlflow.search_runs(["0"], output_format="list")
    client = mlflow.MlflowClient()
    assert run.info.status == "FINISHED" and run.data.params["resolved_task"] == "multiclass"
    for metric in ("train_mlogloss", "val_mlogloss", "train_merror", "val_merror"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == list(range(15)), metric
    assert run.data.tags["kiln.n_trees"] == "15" and 0 <= run.data.metrics["val_accuracy"] <= 1
    assert "n_trees" not in run.data.metrics and "registered_version" not in run.data.metrics  # counters are tags
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"feature_importance.json", "feature_importance.png", "confusion_matrix.json", "xgboost"} <= artifacts
    assert (
        run.data.tags["kiln.metric"] == "best_val_mlogloss" and run.inputs.dataset_inputs[0].dataset.name == "flowers"
    )

    version = client.get_model_version("skin_test", "1")
    assert version.run_id == run.info.run_id and version.tags["kiln.task"] == "tabular"
    local = mlflow.artifacts.download_artifacts("models:/skin_test/1")
    session = ort.InferenceSession(f"{local}/model.onnx")
    meta = session.get_modelmeta().custom_metadata_map
    post = json.loads(meta["kiln.postprocess"])
    assert meta["kiln.family"] == "skinmodel" and meta["kiln.model_name"] == "skin_test"
    assert post == {"task": "multiclass", "classes": ["setosa", "versicolor", "virginica"],
                    "feature_names": ["sepal length", "sepal width", "petal length", "petal width"]}  # fmt: skip

    booster = xgb.XGBClassifier()
    booster.load_model(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="xgboost/model.json"))
    x = pd.read_csv(three_class_csv).drop(columns=["id", "species"]).to_numpy(np.float32)
    label, proba = session.run(None, {"input": x})
    np.testing.assert_allclose(proba, booster.predict_proba(x), atol=1e-5)
    assert (label == proba.argmax(axis=1)).all()


def test_bad_input_is_one_clear_line_and_leaves_no_run(mlflow_uri, three_class_csv, tmp_path):
    no_species = tmp_path / "no_species.csv"
    pd.read_csv(three_class_csv).drop(columns=["species"]).to_csv(no_species, index=False)
    flowers = str(three_class_csv)
    cases = [
        (["--data", str(no_species), "--target", "species"], f"Error: {no_species}: no target column 'species'"),
        (["--data", flowers, "--target", "species"], "feature column 'id' is not numeric (e.g. 'row0' on CSV line 2)"),
        (["--data", flowers, "--target", "species", "--n-estimators", "0"], "Error: n_estimators must be > 0, got 0"),
        (["--data", flowers, "--max-depth", "deep"], "Error: Invalid value for '--max-depth': 'deep' is not a whole"),
        (["--data", flowers], "--target is required with --data"),
        (["--data", str(tmp_path / "none.csv"), "--target", "y"], "Error: data file not found:"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == (2 if "Invalid value" in message else 1), (args, result.output)  # 2: usage
        assert message in result.output, (args, result.output)
        assert result.exc_info[0] is SystemExit  # click's clean exit, not an escaped exception
    assert mlflow.search_runs(["0"], output_format="list") == []
