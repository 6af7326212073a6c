"""The predictor without HTTP: loads from models:/ (alias or version), an .onnx file or an MLflow model folder,
predicts on images, bytes, arrays and records with the contract's pre- and post-processing, and gives exactly
the task endpoint's numbers for the same input. Bad sources are a KilnError naming the source."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from serving_helpers import FEATURES, Registry, image_example, png_bytes, with_metadata

from core.contract import ModelContract, Preprocess, SegmentationPost
from core.errors import KilnError
from serving.edge.app import create_app
from serving.errors import BadRequest, ModelSourceError
from serving.runtime.postprocess import DetectionResult, SegmentationResult, TabularResults
from serving.runtime.predictor import Predictor

PNG = {"content-type": "image/png"}
CONV_CONTRACT = ModelContract(
    task="segmentation",
    family="edgnet",
    preprocess=Preprocess(color="gray", size=(32, 32), resize="letterbox", mean=(0.5,), std=(0.5,), pad_value=0),
    postprocess=SegmentationPost(activation="sigmoid", threshold=0.5),
)


def conv_onnx(path: Path) -> Path:
    """A real (tiny) conv net exported by torch's classic exporter, carrying a contract from core.contract."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1)).eval()
    torch.onnx.export(
        net,
        (torch.rand(1, 1, 32, 32),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    model = with_metadata(onnx.load(str(path)), CONV_CONTRACT.to_metadata())
    onnx.save(model, str(path))
    return path


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 255, (40, 24), dtype=np.uint8)
    bgr = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
    square = np.zeros((32, 32), np.uint8)
    square[8:24, 8:24] = 255
    return [gray, bgr, square]


def _endpoint(client: TestClient, name: str, image: np.ndarray, query: str = "") -> dict[str, Any]:
    r = client.post(f"/v1/models/{name}/predict{query}", content=png_bytes(image), headers=PNG)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _as_body(predictor: Predictor, result: Any) -> dict[str, Any]:
    return {"model": predictor.name, "version": predictor.version, "task": predictor.contract.task, **result.to_json()}


def test_conv_net_from_onnx_file_and_from_the_registry_match_the_endpoint(
    fresh_registry: Registry, tmp_path: Path
) -> None:
    path = conv_onnx(tmp_path / "conv.onnx")
    local = Predictor.load(path)
    assert (local.name, local.version, local.input_names) == ("conv", None, ["input"])
    assert local.contract == CONV_CONTRACT
    version = fresh_registry.register("conv", onnx.load(str(path)), image_example(32))
    predictor = Predictor.load("models:/conv@production", tracking_uri=fresh_registry.uri)
    assert (predictor.name, predictor.version, predictor.contract.task) == ("conv", version, "segmentation")
    images = _images()
    results = predictor.predict_images(images, batch_size=2)  # two runs: a batch of 2, then 1
    assert all(isinstance(r, SegmentationResult) for r in results)
    assert [r.mask.shape for r in results] == [(40, 24), (30, 50), (32, 32)]  # original pixels
    app = create_app(fresh_registry.settings(("conv",)))
    with TestClient(app, raise_server_exceptions=False) as client:
        for image, result in zip(images, results, strict=True):
            assert _endpoint(client, "conv", image) == _as_body(predictor, result)
            assert _endpoint(client, "conv", image, "?threshold=0.3") == _as_body(
                predictor, predictor.predict_images([image], threshold=0.3)[0]
            )
    one_by_one = [local.predict_images([im])[0] for im in images]
    for a, b in zip(results, one_by_one, strict=True):
        assert isinstance(a, SegmentationResult) and isinstance(b, SegmentationResult)
        assert np.allclose(a.logits, b.logits, atol=1e-5)


def test_segmentation_result_fields(tmp_path: Path) -> None:
    predictor = Predictor.load(conv_onnx(tmp_path / "conv.onnx"))
    result = predictor.predict_images([_images()[0]])[0]
    assert isinstance(result, SegmentationResult)
    assert result.mask.dtype == np.uint8 and set(np.unique(result.mask)) <= {0, 1}
    probability = result.probability
    assert probability.shape == (40, 24) and probability.min() >= 0.0 and probability.max() <= 1.0
    assert np.array_equal(result.mask == 1, probability > 0.5)
    assert result.foreground_fraction == pytest.approx(float((probability > 0.5).mean()))
    png = base64.b64decode(result.to_json()["mask_png"])
    assert np.array_equal(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED), result.mask * 255)


def test_detection_boxes_names_and_options_match_the_endpoint(registry: Registry, client: TestClient) -> None:
    predictor = Predictor.load("models:/det/1", tracking_uri=registry.uri)
    image = np.zeros((64, 128, 3), np.uint8)
    result = predictor.predict_images([image])[0]
    assert isinstance(result, DetectionResult)
    assert [b.class_name for b in result.boxes] == ["smoke", "fire"]  # B suppressed by A (NMS), D under conf
    assert result.boxes[0].xyxy == pytest.approx((44.0, 12.0, 84.0, 52.0))
    assert result.class_ids.tolist() == [0, 1] and result.xyxy.shape == (2, 4)
    assert _endpoint(client, "det", image) == _as_body(predictor, result)
    for query, options in (("?conf=0.7", {"conf": 0.7}), ("?iou=0.9&max_det=2", {"iou": 0.9, "max_det": 2})):
        body = _as_body(predictor, predictor.predict_images([image], **options)[0])
        assert _endpoint(client, "det", image, query) == body
    assert len(predictor.predict_images([image], iou=0.9)[0].boxes) == 3  # type: ignore[union-attr]
    with pytest.raises(BadRequest, match="unknown query parameter 'threshold'"):
        predictor.predict_images([image], threshold=0.5)
    with pytest.raises(BadRequest, match=r"conf=1.5 is outside"):
        predictor.predict_images([image], conf=1.5)


def test_regression_and_bytes(registry: Registry, client: TestClient) -> None:
    predictor = Predictor.load("models:/reg@production", tracking_uri=registry.uri)
    image = np.zeros((20, 20), np.uint8)
    result = predictor.predict_bytes([png_bytes(image)])[0]
    assert result.values.shape == (2, 2, 30)  # type: ignore[union-attr]
    assert _endpoint(client, "reg", image) == _as_body(predictor, result)
    with pytest.raises(BadRequest, match="could not be decoded"):
        predictor.predict_bytes([b"not an image"])


def test_tabular_records_match_the_endpoint(registry: Registry, client: TestClient) -> None:
    predictor = Predictor.load("models:/tab@production", tracking_uri=registry.uri)
    records = [{"f0": 2, "f1": 2, "f2": 0, "f3": None}, {"f3": 0, "f2": 0, "f1": -2, "f0": -2}]
    results = predictor.predict_records(records)
    assert isinstance(results, TabularResults) and [r.label for r in results] == ["yes", "no"]
    assert results[0].probabilities is not None and results[0].probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    body = client.post("/v1/models/tab/predict", json=records).json()
    assert body == _as_body(predictor, results)
    raw = predictor.predict_array(np.array([[2, 2, 0, np.nan], [-2, -2, 0, 0]]))
    assert raw.shape == (2,) and raw.tolist() == [1, 0]  # the first output: XGBoost's label tensor
    with pytest.raises(BadRequest, match="missing features"):
        predictor.predict_records([{"f0": 1}])
    with pytest.raises(BadRequest, match="records need a tabular model"):
        Predictor.load("models:/seg@production", tracking_uri=registry.uri).predict_records(records)
    with pytest.raises(BadRequest, match="images need"):
        predictor.predict_images([np.zeros((4, 4), np.uint8)])
    assert len(FEATURES) == predictor.inputs[0].shape[1]


def test_predict_array_and_mlflow_model_folder(registry: Registry, tmp_path: Path) -> None:
    import mlflow.artifacts

    uri = registry.client.get_model_version_download_uri("seg", "1")
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path)))
    predictor = Predictor.load(folder)
    assert predictor.contract.task == "segmentation" and predictor.version is None
    x = np.full((3, 1, 32, 32), 0.75, np.float32)
    out = predictor.predict_array(x)
    assert out.shape == (3, 1, 32, 32) and np.allclose(out, 0.25)  # logits = x - 0.5
    assert predictor.run({"input": x})["output"].shape == (3, 1, 32, 32)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("models:/ghost@production", "ghost"),
        ("models:/seg@staging", "staging"),
        ("models:/seg/99", "seg"),
        ("models:/seg", "is not models:/NAME@ALIAS or models:/NAME/VERSION"),
        ("{tmp}/missing.onnx", "no such file or folder"),
        ("{tmp}/notes.txt", "expected models:/NAME@ALIAS"),
        ("{tmp}/broken.onnx", "broken.onnx"),
        ("{tmp}", "expected models:/NAME@ALIAS"),
    ],
)
def test_bad_sources_are_a_kiln_error_naming_the_source(
    registry: Registry, tmp_path: Path, source: str, message: str
) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "broken.onnx").write_bytes(b"not onnx at all" * 4)
    source = source.format(tmp=tmp_path)
    with pytest.raises(KilnError) as err:
        Predictor.load(source, tracking_uri=registry.uri)
    assert isinstance(err.value, ModelSourceError)
    assert source in err.value.message and message in err.value.message


def test_a_contract_that_does_not_fit_the_tensors_is_refused(tmp_path: Path) -> None:
    path = conv_onnx(tmp_path / "conv.onnx")
    rgb = ModelContract(
        task="segmentation", preprocess=Preprocess(color="rgb", size=(32, 32)), postprocess=SegmentationPost()
    )
    onnx.save(with_metadata(onnx.load(str(path)), rgb.to_metadata()), str(path))
    with pytest.raises(ModelSourceError, match=r"conv.onnx: input has 1 channels but kiln.preprocess.color is 'rgb'"):
        Predictor.load(path)
