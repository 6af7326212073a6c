"""projects/common/footprint_job.py: the registered version's footprint measured in a detached process (after),
in the registering process (inline) or not at all (off), with the seconds it took logged to the run.

.venv/bin/python -m pytest tests/projects/common/test_footprint_job.py -q
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import onnx
import pytest
from onnx import TensorProto, helper

from core.contract import ModelContract, Preprocess, SegmentationPost
from core.errors import SettingsError
from projects.common.footprint_job import footprint_later
from projects.common.onnx_export import embed_metadata


def _model() -> onnx.ModelProto:
    """A 1x1 convolution with a segmentation contract: 10 parameters, 2*9*16*16 FLOPs at 16 px."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 9, 1, 1], [0.1] * 9)
    bias = helper.make_tensor("b", TensorProto.FLOAT, [1], [0.0])
    node = helper.make_node("Conv", ["input", "w", "b"], ["output"])
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 9, None, None])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)]
    graph = helper.make_graph([node], "g", inputs, outputs, [weight, bias])
    contract = ModelContract(task="segmentation", family="test", postprocess=SegmentationPost(),
                             preprocess=Preprocess("gray", (16, 16), mean=(0.5,), std=(0.5,)))  # fmt: skip
    return embed_metadata(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), contract.to_metadata())


def _metrics(run_id: str) -> dict[str, float]:
    return mlflow.MlflowClient().get_run(run_id).data.metrics


@pytest.mark.slow
def test_after_measures_in_a_detached_process(mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_FOOTPRINT", "after")
    run_id = mlflow.MlflowClient().create_run("0").info.run_id
    job = footprint_later(_model(), run_id)
    assert job is not None and job.wait(timeout=120) == 0
    metrics = _metrics(run_id)
    assert metrics["onnx_parameters"] == 10 and metrics["flops"] == 2 * 9 * 16 * 16
    assert metrics["latency_p50_ms"] > 0 and metrics["footprint_seconds"] > 0
    assert not Path(job.args[-1]).exists()  # the job deleted its copy of the model


def test_inline_and_off(mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    client = mlflow.MlflowClient()
    monkeypatch.setenv("KILN_FOOTPRINT", "off")
    quiet = client.create_run("0").info.run_id
    assert footprint_later(_model(), quiet) is None and _metrics(quiet) == {}
    monkeypatch.setenv("KILN_FOOTPRINT", "inline")
    measured = client.create_run("0").info.run_id
    assert footprint_later(_model(), measured) is None
    assert _metrics(measured)["latency_p50_ms"] > 0 and _metrics(measured)["footprint_seconds"] > 0
    monkeypatch.setenv("KILN_FOOTPRINT", "later")
    with pytest.raises(SettingsError, match="KILN_FOOTPRINT='later' is not one of"):
        footprint_later(_model(), measured)
