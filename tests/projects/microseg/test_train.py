"""microseg training end to end on tiny data: registration with the contract, the budget, distillation.

.venv/bin/python -m pytest tests/projects/microseg/test_train.py -q
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from core.contract import ModelContract, Preprocess, SegmentationPost
from data.segsets import generate
from projects.common.config import resolve_config
from projects.common.onnx_export import embed_metadata, export_onnx
from projects.microseg.distill import DistilledLoader, DistillLoss, Teacher
from projects.microseg.train import MicroSegConfig, main, train

TINY = {
    "img_size": 32,
    "epochs": 1,
    "batch_size": 4,
    "patience": 0,
    "variant": "micronet",
    "device": "cpu",
    "register": "always",
}  # a 1-epoch net may sit at the all-background baseline


@pytest.fixture
def tiny_sets(tmp_path: Path) -> tuple[Path, Path]:
    return generate("seg_polyps", tmp_path / "train", 8, 32, 0), generate("seg_polyps", tmp_path / "test", 4, 32, 9)


def config(train_dir: Path, test_dir: Path, **extra: object) -> MicroSegConfig:
    return resolve_config(MicroSegConfig, None, {**TINY, "data": str(train_dir), "test_data": str(test_dir), **extra})


def tiny_teacher(path: Path) -> Path:
    """A gray segmentation 'model' that calls bright pixels foreground: logits = 4 * normalised gray."""
    conv = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(4.0)
        conv.bias.zero_()
    export_onnx(conv, torch.zeros(1, 1, 32, 32), path, dynamic_hw=True)
    contract = ModelContract(task="segmentation", family="test", postprocess=SegmentationPost(),
                             preprocess=Preprocess("gray", (32, 32), mean=(0.5,), std=(0.5,)))  # fmt: skip
    onnx.save(embed_metadata(onnx.load(str(path)), contract.to_metadata()), str(path))
    return path


@pytest.mark.slow
def test_train_registers_a_budgeted_model_with_its_contract_and_test_iou(mlflow_uri, tiny_sets, monkeypatch) -> None:
    monkeypatch.setenv("KILN_FOOTPRINT", "inline")  # measured before registration returns, so it can be read here
    final = train(config(*tiny_sets))
    assert final["num_parameters"] == 8_553 and 0.0 <= final["test_iou"] <= 1.0
    client = mlflow.MlflowClient()
    version = client.get_model_version("microseg_micronet", "1")
    run = client.get_run(version.run_id)
    assert run.data.metrics["num_parameters"] == 8_553 and run.data.metrics["param_budget"] == 10_000
    footprint = {"onnx_parameters", "onnx_size_bytes", "flops", "latency_p50_ms", "latency_p99_ms"}
    assert footprint <= set(run.data.metrics), "registration profiles every version (serving/runtime/footprint.py)"
    assert run.data.metrics["flops"] > 0 and run.data.metrics["latency_p50_ms"] > 0
    assert run.data.tags["kiln.family"] == "microseg" and run.data.tags["kiln.variant"] == "micronet"
    local = mlflow.artifacts.download_artifacts("models:/microseg_micronet/1")
    meta = {p.key: p.value for p in onnx.load(f"{local}/model.onnx").metadata_props}
    contract = ModelContract.parse(meta)
    assert contract.task == "segmentation" and contract.preprocess.color == "rgb"
    assert contract.preprocess.size == (32, 32) and contract.preprocess.size_multiple == 8


def test_a_variant_over_budget_is_refused_before_any_run(mlflow_uri, tiny_sets) -> None:
    result = CliRunner().invoke(main, ["--variant", "mininet_50k", "--data", str(tiny_sets[0]), "--img-size", "32"])
    assert result.exit_code == 1
    assert "Error: microseg variant 'mininet_50k' has 50,015 parameters, over the budget of 10,000" in result.output
    assert mlflow.search_runs(["0"], output_format="list") == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--img-size", "36"], "img_size 36 must be a multiple of 8"),
        (["--sample", "nope"], "unknown sample 'nope'"),
        (["--variant", "x"], "unknown variant 'x'"),
        (["--teacher", "/no/teacher.onnx"], "teacher: cannot load /no/teacher.onnx"),
    ],
)
def test_bad_flags_are_one_line_errors(mlflow_uri, tiny_sets, flags: list[str], message: str) -> None:
    data = [] if "--sample" in flags else ["--data", str(tiny_sets[0])]
    result = CliRunner().invoke(main, [*data, "--img-size", "32", *flags])
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_teacher_logits_ride_along_on_the_augmented_batch(tmp_path: Path) -> None:
    teacher = Teacher.load(str(tiny_teacher(tmp_path / "teacher.onnx")))
    batch = torch.full((2, 3, 32, 32), -1.0)  # normalised RGB: black
    batch[:, :, :, 16:] = 1.0  # right half white
    loader = DistilledLoader([(batch, torch.zeros(2, 1, 32, 32))], teacher)
    (inputs, target), *_ = list(iter(loader))
    assert target.shape == (2, 2, 32, 32)
    assert torch.all(target[:, 1, :, :15] < -3.5) and torch.all(target[:, 1, :, 17:] > 3.5)


def test_distill_loss_blends_the_teacher_term_and_leaves_validation_alone() -> None:
    base = torch.nn.BCEWithLogitsLoss()
    loss = DistillLoss(base, weight=0.5, temperature=2.0)
    logits, mask = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
    assert loss(logits, mask) == base(logits, mask)
    agreeing = loss(torch.full((1, 1, 4, 4), 3.0), torch.cat([mask, torch.full((1, 1, 4, 4), 3.0)], 1))
    disagreeing = loss(torch.full((1, 1, 4, 4), 3.0), torch.cat([mask, torch.full((1, 1, 4, 4), -3.0)], 1))
    assert disagreeing > agreeing + 1.0
    with pytest.raises(ValueError, match="distill_weight must be in"):
        DistillLoss(base, weight=1.5, temperature=1.0)


@pytest.mark.slow
def test_distillation_from_a_teacher_logs_its_name(mlflow_uri, tiny_sets, tmp_path: Path) -> None:
    path = tiny_teacher(tmp_path / "tiny_teacher.onnx")
    final = train(config(*tiny_sets, teacher=str(path), distill_weight=0.7, model_name="student"))
    run = mlflow.MlflowClient().get_run(mlflow.MlflowClient().get_model_version("student", "1").run_id)
    assert run.data.params["teacher"] == str(path) and run.data.params["teacher_name"] == "tiny_teacher"
    assert run.data.tags["kiln.teacher"] == "tiny_teacher" and np.isfinite(final["best_val_iou"])
