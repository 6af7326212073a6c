"""End to end: `mlflow run . -e edgnet` against a sqlite store, then resume, then bad input."""

import mlflow
import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from data.drawings import generate
from projects.common.checkpoint import load_checkpoint
from projects.edgnet.model import create_model
from projects.edgnet.train import main

TINY = {"epochs": 2, "img_size": 64, "batch_size": 4, "patience": 0, "model_name": "edgnet_test", "register": "always"}


@pytest.fixture
def drawings(tmp_path):
    return generate(tmp_path / "drawings", count=10, size=64, seed=0)


def only_run(experiment="0"):
    runs = mlflow.search_runs([experiment], output_format="list")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


@pytest.mark.slow
def test_mlflow_run_tracks_exports_and_registers(mlflow_run, drawings):
    output = mlflow_run("edgnet", {**TINY, "data": drawings})
    assert "best val IoU" in output
    run = only_run()
    client = mlflow.MlflowClient()
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "2" and run.data.params["variant"] == "edgnet"
    for metric in ("train_loss", "val_loss", "val_iou", "lr", "epoch_seconds", "samples_per_second"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == [1, 2], metric
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoints", "config.yaml", "loss_curve.png", "overlays", "datasets"} <= artifacts
    checkpoints = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert {p.rsplit("-", 1)[0] for p in checkpoints} == {"checkpoints/best", "checkpoints/last"}  # name-stamp.pt/.json
    assert run.data.tags["mlflow.note.content"].startswith("edgnet: best val IoU")
    dataset = run.inputs.dataset_inputs[0].dataset
    assert dataset.name == "drawings" and len(dataset.digest) == 16

    version = client.get_model_version("edgnet_test", "1")
    assert version.run_id == run.info.run_id
    local = mlflow.artifacts.download_artifacts("models:/edgnet_test/1")
    session = ort.InferenceSession(f"{local}/model.onnx")
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["kiln.task"] == "segmentation" and '"size": [64, 64]' in meta["kiln.preprocess"]

    model = create_model("edgnet").eval()
    model.load_state_dict(load_checkpoint(run.info.run_id, "best")["model"])
    batch = np.random.default_rng(0).normal(size=(2, 1, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": batch})[0], expected, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_resume_continues_the_same_run_without_duplicate_steps(mlflow_run, drawings):
    mlflow_run("edgnet", {**TINY, "epochs": 1, "data": drawings})
    first = only_run()
    mlflow_run("edgnet", {**TINY, "epochs": 3, "data": drawings, "resume": first.info.run_id})
    client = mlflow.MlflowClient()
    steps = [m.step for m in client.get_metric_history(first.info.run_id, "val_loss")]
    assert steps == [1, 2, 3]
    launcher = [r for r in mlflow.search_runs(["0"], output_format="list") if r.info.run_id != first.info.run_id]
    assert launcher[0].data.tags["kiln.resumed_into"] == first.info.run_id


def run_module(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [(["--data", "/no/such/folder"], "Error: data folder not found: /no/such/folder", 1),
     (["--epochs", "two"], "Error: Invalid value for '--epochs': 'two' is not a whole number", 2),  # a usage error
     (["--variant", "unet9"], "Error: unknown variant 'unet9'", 1)],
)  # fmt: skip
def test_bad_input_is_one_clear_line(mlflow_uri, args, message, code):
    result = run_module(*args)
    assert result.exit_code == code
    assert message in result.output
    assert result.exc_info[0] is SystemExit  # click's clean exit, not an escaped exception


def test_mask_mismatch_is_reported_before_any_run(mlflow_uri, drawings):
    import cv2

    cv2.imwrite(str(drawings / "masks" / "0003.png"), np.zeros((32, 32), np.uint8))
    result = run_module("--data", str(drawings), "--variant", "edgnet", "--img-size", "64")
    assert result.exit_code == 1 and "0003.png: mask size (32, 32) differs" in result.output
    assert mlflow.search_runs(["0"], output_format="list") == []
