"""`kiln optimize --int8`: static int8 refused when it loses too much IoU, registered with its tags when it does not.

.venv/bin/python -m pytest tests/efficiency/test_optimize.py -q
"""

from __future__ import annotations

from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from core.contract import ModelContract, Preprocess, Ranking, SegmentationPost
from efficiency.cli import optimize_command
from projects.common import tracking
from projects.common.onnx_export import export_onnx, log_onnx_model

SIDE = 32


@pytest.fixture
def halves(tmp_path: Path) -> Path:
    """Images whose right (or left) part is bright; the mask is exactly the bright part."""
    folder = tmp_path / "halves"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        cut = int(rng.integers(6, 26))
        image = np.full((SIDE, SIDE), 60, np.uint8)
        image[:, cut:] = 200
        if i % 2:
            image = image[:, ::-1].copy()
        cv2.imwrite(str(folder / "images" / f"{i}.png"), image)
        cv2.imwrite(str(folder / "masks" / f"{i}.png"), np.where(image > 127, 255, 0).astype(np.uint8))
    return folder


def sign_net() -> torch.nn.Module:
    """logit = normalised gray: quantizes cleanly."""
    conv = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
    return conv


class Fragile(torch.nn.Module):
    """The logit travels in one channel beside a second channel 1000x larger: one int8 scale for both rounds the
    small channel to zero, so every pixel lands on the threshold and the int8 mask is empty."""

    def __init__(self) -> None:
        super().__init__()
        self.spread = torch.nn.Conv2d(1, 2, 1)
        self.pick = torch.nn.Conv2d(2, 1, 1)
        with torch.no_grad():
            self.spread.weight.copy_(torch.tensor([1.0, 1000.0]).view(2, 1, 1, 1))
            self.spread.bias.zero_()
            self.pick.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
            self.pick.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pick(self.spread(x))


def register(model: torch.nn.Module, name: str, data: Path, tmp_path: Path, split: bool = True) -> None:
    path = export_onnx(model, torch.zeros(1, 1, SIDE, SIDE), tmp_path / f"{name}.onnx", dynamic_hw=True)
    contract = ModelContract(task="segmentation", family="test", postprocess=SegmentationPost(),
                             preprocess=Preprocess("gray", (SIDE, SIDE), mean=(0.5,), std=(0.5,)),
                             ranking=Ranking("best_val_iou", "max"))  # fmt: skip
    with mlflow.start_run():
        tracking.log_dataset(str(data), "0" * 16, data.name)
        if split:
            mlflow.log_params({"val_fraction": 0.5, "seed": 3})
        mlflow.log_metrics({"best_val_iou": 0.9, "num_parameters": 2.0})
        log_onnx_model(path, input_example=np.zeros((1, 1, SIDE, SIDE), np.float32), model_name=name,
                       contract=contract)  # fmt: skip


@pytest.mark.slow
def test_bigger_int8_is_refused_and_force_registers_it_with_its_source(mlflow_uri, halves, tmp_path) -> None:
    """A 1x1 conv gains nothing from int8: the QDQ graph is bigger (and no faster). Refused with the figures;
    --force registers it. The IoU is measured on the run's hold-out (4 of 8 images), not the images it trained on."""
    register(sign_net(), "sign", halves, tmp_path)
    result = CliRunner().invoke(optimize_command, ["sign", "--version", "1", "--int8", "--max-drop", "0.01"])
    assert result.exit_code == 1, result.output
    assert "refused: " in result.output and "bigger than fp32: 0.004 MB vs 0.003 MB" in result.output
    assert "evaluated on 4 samples" in result.output and "val_fraction=0.5 and seed=3" in result.output
    client = mlflow.MlflowClient()
    assert [v.version for v in client.search_model_versions("name='sign'")] == [1]
    args = ["sign", "--version", "1", "--int8", "--max-drop", "0.01", "--force"]
    result = CliRunner().invoke(optimize_command, args)
    assert result.exit_code == 0, result.output
    assert "registered sign v2 (--force, despite: " in result.output
    version = client.get_model_version("sign", "2")
    assert version.tags["kiln.source_version"] == "1" and version.tags["kiln.int8"] == "true"
    assert abs(float(version.tags["kiln.metric_drop"])) <= 0.01 and float(version.tags["kiln.speedup"]) > 0
    run = client.get_run(version.run_id)
    assert run.data.params["forced"] == "True" and "hold-out: 4 of 8" in run.data.params["held_out"]
    assert run.data.metrics["fp32_iou"] == pytest.approx(1.0) and "latency_p50_ms" in run.data.metrics
    assert run.data.metrics["best_val_iou"] == pytest.approx(0.9 - run.data.metrics["metric_drop"])
    local = mlflow.artifacts.download_artifacts("models:/sign/2")
    import onnx

    graph = onnx.load(f"{local}/model.onnx")
    assert any(n.op_type == "QuantizeLinear" for n in graph.graph.node)
    assert {p.key for p in graph.metadata_props} >= {"kiln.task", "kiln.preprocess", "kiln.postprocess"}


def test_gate_passes_only_a_faster_smaller_close_version() -> None:
    from efficiency.optimize import refusals

    assert refusals(0.005, 0.01, fp32_ms=2.0, int8_ms=1.0, fp32_bytes=400, int8_bytes=120) == ()
    slower = refusals(0.0, 0.01, fp32_ms=1.0, int8_ms=1.96, fp32_bytes=60_000, int8_bytes=110_000)
    assert slower == ("slower than fp32: p50 1.960 ms vs 1.000 ms (speed-up x0.51)",
                      "bigger than fp32: 0.110 MB vs 0.060 MB")  # fmt: skip
    assert refusals(0.02, 0.01, 2.0, 1.0, 400, 120) == ("metric drop 0.0200 > --max-drop 0.01",)


def test_held_out_split_is_the_trainers(tmp_path) -> None:
    """The images optimize evaluates on are exactly those microseg's split validated on (no training image)."""
    from efficiency.optimize import held_out_pairs
    from projects.common.segdata import random_split

    pairs = [(tmp_path / "images" / f"{i:02d}.png", tmp_path / "masks" / f"{i:02d}.png") for i in range(20)]
    chosen, how = held_out_pairs(pairs, tmp_path, (0.25, 5), "run")
    assert len(chosen) == 5 and "val_fraction=0.25 and seed=5" in how
    train, val = random_split(list(range(20)), 0.25, 5)  # what microseg's and edgnet's split call without a given split
    assert [int(p[0].stem) for p in chosen] == val and not set(val) & set(train)


@pytest.mark.slow
def test_without_split_params_the_training_folder_is_not_used(mlflow_uri, halves, tmp_path) -> None:
    register(sign_net(), "nosplit", halves, tmp_path, split=False)
    result = CliRunner().invoke(optimize_command, ["nosplit", "--version", "1", "--int8"])
    assert result.exit_code == 2 and "records no val_fraction/seed" in result.output and "--data" in result.output


@pytest.mark.slow
def test_int8_that_loses_too_much_is_refused_and_not_registered(mlflow_uri, halves, tmp_path) -> None:
    register(Fragile(), "fragile", halves, tmp_path)
    result = CliRunner().invoke(optimize_command, ["fragile", "--version", "1", "--int8", "--json"])
    assert result.exit_code == 1, result.output
    assert '"accepted": false' in result.output and '"registered_version": null' in result.output
    assert '"fp32": 1.0' in result.output
    assert [v.version for v in mlflow.MlflowClient().search_model_versions("name='fragile'")] == [1]


def test_unknown_model_and_bad_flags_are_one_line_errors(mlflow_uri) -> None:
    result = CliRunner().invoke(optimize_command, ["nope", "--version", "1", "--int8"])
    assert result.exit_code == 2 and "Error: model 'nope' has no version 1" in result.output
    result = CliRunner().invoke(optimize_command, ["nope", "--version", "1", "--int8", "--max-drop", "-1"])
    assert result.exit_code == 2 and "--max-drop must be >= 0" in result.output


@pytest.mark.slow
def test_a_tabular_regressor_is_quantized_dynamically_and_judged_by_pearson(mlflow_uri, tmp_path) -> None:
    import pandas as pd

    from core.contract import TabularPost

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)).eval()
    names = [f"f{i}" for i in range(4)]
    x = np.random.default_rng(0).normal(size=(120, 4)).astype(np.float32)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).numpy()[:, 0]
    table = pd.DataFrame(x, columns=names).assign(target=y)
    table.to_csv(tmp_path / "rows.csv", index=False)
    path = export_onnx(net, torch.zeros(2, 4), tmp_path / "mlp.onnx", dynamic_hw=False)
    contract = ModelContract(task="tabular", family="test", postprocess=TabularPost("regression", tuple(names)))
    with mlflow.start_run():
        mlflow.log_param("target", "target")
        log_onnx_model(path, input_example=x[:2], model_name="mlp", contract=contract)
    # a 4-64-1 MLP is no faster nor smaller in int8 on this machine: --force, to test the tabular path to the end
    args = ["mlp", "--version", "1", "--int8", "--data", str(tmp_path / "rows.csv"), "--max-drop", "0.05", "--force"]
    result = CliRunner().invoke(optimize_command, args)
    assert result.exit_code == 0, result.output
    assert "pearson" in result.output and "fp32 1.0000" in result.output and "registered mlp v2" in result.output
    run = mlflow.MlflowClient().get_run(mlflow.MlflowClient().get_model_version("mlp", "2").run_id)
    assert run.data.params["quantization"] == "dynamic int8"
