"""serving/runtime/footprint.py, the leaderboard's inputs: FLOPs that agree with torch's counter,
tree-ensemble nodes, and a registration hook that records rather than fails.

.venv/bin/python -m pytest tests/efficiency/test_footprint.py -q
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import onnx
import torch
from torch.utils.flop_counter import FlopCounterMode

from core.contract import ModelContract, Preprocess, SegmentationPost
from projects.common.onnx_export import embed_metadata, export_onnx
from projects.microseg.model import create_model
from serving.runtime.footprint import count_parameters, measure, profile_registered


def onnx_of(model: torch.nn.Module, side: int, path: Path) -> onnx.ModelProto:
    export_onnx(model.eval(), torch.zeros(1, 3, side, side), path, dynamic_hw=True)
    contract = ModelContract(task="segmentation", postprocess=SegmentationPost(),
                             preprocess=Preprocess("rgb", (side, side)))  # fmt: skip
    return embed_metadata(onnx.load(str(path)), contract.to_metadata())


def test_flops_match_torchs_counter_at_the_contract_size(tmp_path: Path) -> None:
    model = create_model("mininet")
    with FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, 3, 32, 32))
    footprint = measure(onnx_of(model, 32, tmp_path / "m.onnx"), budget_s=0.05)
    assert footprint.flops == counter.get_total_flops()
    assert 9_000 < footprint.parameters < 9_807  # BatchNorm folded into the convolutions
    assert footprint.latency_p50_ms > 0 and footprint.runs >= 10 and footprint.size_bytes > 30_000


def test_tree_ensemble_nodes_count_and_its_flops_are_not_guessed() -> None:
    node = onnx.helper.make_node("TreeEnsembleRegressor", ["x"], ["y"], domain="ai.onnx.ml",
                                 nodes_nodeids=[0, 1, 2], nodes_treeids=[0, 0, 0])  # fmt: skip
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                   [None, 2])], [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT,
                                   [None, 1])])  # fmt: skip
    assert count_parameters(onnx.helper.make_model(graph)) == 3


def test_a_model_that_cannot_be_profiled_keeps_its_registration_and_says_why(mlflow_uri, capsys) -> None:
    graph = onnx.helper.make_graph([onnx.helper.make_node("NoSuchOp", ["x"], ["y"], domain="nowhere")], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])  # fmt: skip
    with mlflow.start_run() as run:
        assert profile_registered(onnx.helper.make_model(graph), run.info.run_id) is None
    tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags
    assert "kiln.footprint_error" in tags and "warning: footprint not measured" in capsys.readouterr().out
