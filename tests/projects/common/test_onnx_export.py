import mlflow
import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from core.contract import ModelContract, Preprocess, Ranking, SegmentationPost
from projects.common.onnx_export import OnnxMismatchError, check_onnx, export_onnx, log_onnx_model


def tiny_conv() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1))


def test_export_has_dynamic_batch_and_spatial_axes(tmp_path):
    model = tiny_conv()
    path = export_onnx(model, torch.randn(1, 1, 16, 16), tmp_path / "m.onnx", dynamic_hw=True)
    session = ort.InferenceSession(str(path))
    out = session.run(None, {"input": np.random.rand(3, 1, 24, 40).astype(np.float32)})[0]
    assert out.shape == (3, 1, 24, 40)
    assert check_onnx(path, model, torch.randn(2, 1, 16, 16)) < 1e-4


def test_check_fails_when_outputs_differ(tmp_path):
    model = tiny_conv()
    path = export_onnx(model, torch.randn(1, 1, 8, 8), tmp_path / "m.onnx", dynamic_hw=True)
    with torch.no_grad():
        model[2].bias += 1.0
    with pytest.raises(OnnxMismatchError, match="differs from PyTorch by up to 1"):
        check_onnx(path, model, torch.randn(2, 1, 8, 8))


def test_log_registers_with_metadata_in_file_and_mlmodel(tmp_path, mlflow_uri):
    model = tiny_conv()
    path = export_onnx(model, torch.randn(1, 1, 8, 8), tmp_path / "m.onnx", dynamic_hw=True)
    example = np.random.rand(1, 1, 8, 8).astype(np.float32)
    post, ranking = SegmentationPost(threshold=0.5), Ranking("best_val_iou", "max")
    contract = ModelContract("segmentation", "edgnet", Preprocess("gray", (8, 8)), post, ranking)
    with mlflow.start_run() as run:
        version = log_onnx_model(path, input_example=example, model_name="tiny", contract=contract)
    assert int(version.version) == 1 and version.run_id == run.info.run_id
    assert {k: version.tags[k] for k in ("kiln.task", "kiln.metric", "kiln.mode")} == {
        "kiln.task": "segmentation", "kiln.metric": "best_val_iou", "kiln.mode": "max"}  # fmt: skip
    local = mlflow.artifacts.download_artifacts(f"models:/tiny/{version.version}")
    session = ort.InferenceSession(f"{local}/model.onnx")
    props = session.get_modelmeta().custom_metadata_map
    assert props["kiln.task"] == "segmentation"
    assert props["kiln.postprocess"] == '{"activation": "sigmoid", "threshold": 0.5}'
    assert props["kiln.run_id"] == run.info.run_id and props["kiln.model_name"] == "tiny"
    assert ModelContract.parse(props) == contract.with_ids(model_name="tiny", run_id=run.info.run_id)
    info = mlflow.models.get_model_info(f"models:/tiny/{version.version}")
    assert info.metadata["kiln.task"] == "segmentation"
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 1, -1, -1]
