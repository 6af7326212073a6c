"""`--model` checks, and the export module: `[B, 4+nc, N]` xywh output that ONNX reproduces.

.venv/bin/python -m pytest tests/projects/yolo/test_model.py -q
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from projects.common.onnx_export import check_onnx, export_onnx
from projects.yolo.model import DetectionModel, ModelError, export_module, load_model, raw_predictions, resolve_model


@pytest.mark.parametrize(("spec", "head"), [("yolov8n.yaml", "Detect"), ("yolo11n.yaml", "Detect")])
def test_bundled_yamls_resolve(spec: str, head: str) -> None:
    resolved = resolve_model(spec)
    assert (resolved.kind, resolved.head, resolved.source) == ("yaml", head, spec)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("yolov99z.yaml", r"model YAML 'yolov99z.yaml' not found"),
        ("yolov8n-seg.yaml", r"'yolov8n-seg.yaml' is not a YOLO detection model \(its head is 'Segment'\)"),
        ("yolov8n.pt", r"model weights 'yolov8n.pt' not found; kiln never downloads weights"),
        ("https://example.com/yolov8n.pt", r"is a URL"),
        ("model.onnx", r"must be a model YAML \(.yaml\) or a local checkpoint \(.pt\)"),
    ],
)
def test_bad_models_are_named(spec: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        resolve_model(spec)


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match=r"broken.pt: not a readable ultralytics checkpoint"):
        resolve_model(str(bad))


def test_local_yaml_file_resolves(tmp_path: Path) -> None:
    import shutil

    import ultralytics

    source = Path(ultralytics.__file__).parent / "cfg" / "models" / "v8" / "yolov8.yaml"
    local = tmp_path / "my_detector.yaml"
    shutil.copy(source, local)
    assert resolve_model(str(local)).kind == "yaml"


def test_export_module_layout_and_onnx_match(tmp_path: Path) -> None:
    """yolo11n (C3k2/C2PSA blocks); yolov8n goes through the same path in test_train's end-to-end run."""
    model = DetectionModel("yolo11n.yaml", nc=3, verbose=False).eval()
    module = export_module(model)
    batch = torch.rand(2, 3, 64, 64)
    out = module(batch)
    anchors = (64 // 8) ** 2 + (64 // 16) ** 2 + (64 // 32) ** 2
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (2, 4 + 3, anchors)
    assert torch.allclose(out, raw_predictions(model, batch), atol=1e-3)  # fusing changes nothing
    path = export_onnx(module, batch[:1], tmp_path / "m.onnx", dynamic_hw=False, input_name="images",
                       output_name="output0")  # fmt: skip
    assert check_onnx(path, module, batch, rtol=1e-3, atol=1e-3) < 1e-2  # batch 2 through a batch-1 export
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert session.get_inputs()[0].shape[0] == "batch"


def test_load_model_roundtrip(tmp_path: Path) -> None:
    model = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    torch.save({"model": model.half(), "epoch": -1}, tmp_path / "w.pt")
    loaded = load_model(tmp_path / "w.pt")
    assert next(loaded.parameters()).dtype == torch.float32 and not loaded.training
    assert resolve_model(str(tmp_path / "w.pt")).kind == "weights"
    assert np.isfinite(raw_predictions(loaded, torch.rand(1, 3, 64, 64)).numpy()).all()
