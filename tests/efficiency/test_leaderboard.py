"""`kiln leaderboard`: the Pareto frontier and best-under-budget over a handful of versions, and --measure.

.venv/bin/python -m pytest tests/efficiency/test_leaderboard.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import mlflow.onnx
import onnx
import pytest
import torch
from click.testing import CliRunner

from core.contract import ModelContract, Preprocess, Ranking, SegmentationPost
from efficiency.cli import leaderboard_command
from efficiency.leaderboard import Entry, dominates, mark_frontier
from projects.common.onnx_export import embed_metadata, export_onnx

# name, metric, parameters, p50 ms: "wide" is dominated by "mid" (worse, bigger, slower); the rest trade off.
VERSIONS = [("tiny", 0.60, 5_000, 0.5), ("mid", 0.75, 9_000, 0.9), ("wide", 0.70, 40_000, 2.0),
            ("big", 0.85, 500_000, 6.0), ("other_task", 0.99, 10, 0.1)]  # fmt: skip


def fake_version(client: mlflow.MlflowClient, name: str, metric: float, params: int, p50: float, task: str) -> None:
    """A registered version whose run holds the metrics the leaderboard reads (no model file needed)."""
    with mlflow.start_run() as run:
        mlflow.log_metrics(
            {
                "best_val_iou": metric,
                "num_parameters": params,
                "latency_p50_ms": p50,
                "latency_p99_ms": p50 * 2,
                "onnx_size_bytes": params * 4.0,
                "flops": params * 100.0,
            }
        )
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    for key, value in {"kiln.task": task, "kiln.metric": "best_val_iou", "kiln.mode": "max"}.items():
        client.set_model_version_tag(name, version.version, key, value)


@pytest.fixture
def board(mlflow_uri: str) -> None:
    client = mlflow.MlflowClient()
    for name, metric, params, p50 in VERSIONS:
        fake_version(client, name, metric, params, p50, "tabular" if name == "other_task" else "segmentation")
    client.set_registered_model_alias("mid", "production", "1")


def test_frontier_and_best_under_budget(board, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(leaderboard_command, ["--task", "segmentation", "--json", "--plot", str(tmp_path / "f.png")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["frontier"] == ["tiny v1", "mid v1", "big v1"]
    assert {e["model"] for e in out["entries"]} == {"tiny", "mid", "wide", "big"}
    best = {b["max_params"]: b["best"] for b in out["budgets"]}
    assert best[10_000] == "mid v1" and best[50_000] == "mid v1" and best[1_000_000] == "big v1"
    assert (tmp_path / "f.png").stat().st_size > 1000
    text = runner.invoke(leaderboard_command, ["--task", "segmentation", "--max-params", "6000"]).output
    assert "params <= 6,000" in text and "tiny v1" in text.split("Best under each budget:")[1]
    latency = runner.invoke(leaderboard_command, ["--task", "segmentation", "--max-latency-ms", "1"]).output
    assert "mid v1  best_val_iou=0.7500" in latency
    assert "production" in text


def test_nothing_registered_and_bad_budgets_are_one_line_errors(mlflow_uri) -> None:
    result = CliRunner().invoke(leaderboard_command, ["--task", "segmentation"])
    assert result.exit_code == 1 and "Error: no registered versions with task='segmentation'" in result.output
    result = CliRunner().invoke(leaderboard_command, ["--max-params", "0"])
    assert result.exit_code == 2 and "must be > 0" in result.output


def test_dominance_needs_one_strict_improvement() -> None:
    a = Entry("a", 1, "segmentation", "iou", "max", 0.5, 100, 1.0, 2.0, None, None)
    same = Entry("b", 1, "segmentation", "iou", "max", 0.5, 100, 1.0, 2.0, None, None)
    assert not dominates(a, same) and not dominates(same, a)
    assert [e.model for e in mark_frontier([a, same])] == ["a", "b"]
    loss = Entry("c", 1, "segmentation", "val_loss", "min", 0.1, 100, 1.0, 2.0, None, None)
    worse_loss = Entry("d", 1, "segmentation", "val_loss", "min", 0.2, 100, 1.0, 2.0, None, None)
    assert dominates(loss, worse_loss)


@pytest.mark.slow
def test_measure_profiles_a_version_without_a_footprint(mlflow_uri, tmp_path: Path) -> None:
    path = export_onnx(torch.nn.Conv2d(1, 1, 3, padding=1), torch.zeros(1, 1, 16, 16), tmp_path / "m.onnx",
                       dynamic_hw=True)  # fmt: skip
    contract = ModelContract(task="segmentation", postprocess=SegmentationPost(), ranking=Ranking("best_val_iou"),
                             preprocess=Preprocess("gray", (16, 16)))  # fmt: skip
    proto = embed_metadata(onnx.load(str(path)), contract.to_metadata())
    with mlflow.start_run() as run:  # logged without log_onnx_model, so nothing profiled it at registration
        mlflow.log_metric("best_val_iou", 0.5)
        info = mlflow.onnx.log_model(proto, name="model")
    client = mlflow.MlflowClient()
    version = mlflow.register_model(info.model_uri, "conv")
    client.set_model_version_tag("conv", version.version, "kiln.metric", "best_val_iou")
    assert "latency_p50_ms" not in client.get_run(run.info.run_id).data.metrics
    result = CliRunner().invoke(leaderboard_command, ["--measure", "--json"])
    assert result.exit_code == 0, result.output
    entry = json.loads(result.output)["entries"][0]
    assert entry["parameters"] == 10 and entry["flops"] == 2 * 9 * 16 * 16 and entry["latency_p50_ms"] > 0
    assert "latency_p50_ms" in client.get_run(run.info.run_id).data.metrics


def test_each_task_has_its_own_frontier_ranked_by_its_own_metric(board) -> None:
    """Without --task, a tabular AUC of 0.99 must not push every segmentation IoU under "Dominated"; an int8
    version is placed on its own task's frontier when it trades metric for speed."""
    client = mlflow.MlflowClient()
    with mlflow.start_run() as run:
        mlflow.log_metrics({"val_auc": 0.97, "num_parameters": 20, "latency_p50_ms": 0.05, "latency_p99_ms": 0.1})
    client.create_registered_model("skin")
    client.create_model_version("skin", f"runs:/{run.info.run_id}/model", run.info.run_id)
    for key, value in {"kiln.task": "tabular", "kiln.metric": "val_auc", "kiln.mode": "max"}.items():
        client.set_model_version_tag("skin", "1", key, value)
    with mlflow.start_run() as run:  # mid v2: int8 of v1, a little worse, faster
        mlflow.log_metrics({"best_val_iou": 0.745, "num_parameters": 9_000, "latency_p50_ms": 0.5,
                            "latency_p99_ms": 1.0})  # fmt: skip
    client.create_model_version("mid", f"runs:/{run.info.run_id}/model", run.info.run_id)
    tags = {"kiln.task": "segmentation", "kiln.metric": "best_val_iou", "kiln.mode": "max", "kiln.source_version": "1"}
    for key, value in tags.items():
        client.set_model_version_tag("mid", "2", key, value)
    out = json.loads(CliRunner().invoke(leaderboard_command, ["--json"]).output)
    fronts = {(g["task"], g["metric"]): g["frontier"] for g in out["groups"]}
    assert fronts[("segmentation", "best_val_iou")] == ["tiny v1", "mid v2", "mid v1", "big v1"]
    assert sorted(fronts[("tabular", "best_val_iou")] + fronts[("tabular", "val_auc")]) == ["other_task v1", "skin v1"]
    best = {(b["task"], b["metric"], b["max_params"]): b["best"] for b in out["budgets"]}
    assert best[("segmentation", "best_val_iou", None)] == "big v1" and best[("tabular", "val_auc", None)] == "skin v1"
    text = CliRunner().invoke(leaderboard_command, []).output
    seg = text.split("== segmentation: ranked by best_val_iou (higher is better) ==")[1].split("==")[0]
    assert "mid v2 (int8 of v1)" in seg.split("Best under each budget:")[0]
    assert "wide v1" in seg.split("Dominated (within this task and metric):")[1]
    assert "== tabular: ranked by val_auc (higher is better) ==" in text
