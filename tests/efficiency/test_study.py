"""`kiln study budget`: one cell end to end under a parent run, and the statistics of the table.

.venv/bin/python -m pytest tests/efficiency/test_study.py -q
"""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner

from efficiency.cli import study
from efficiency.study import Cell, StudyPlan, distillation_effects, summarise, t_interval

CELL_SETTINGS = ["--set", "img_size=32", "--set", "epochs=1", "--set", "num_samples=8", "--set", "num_test=4",
                 "--set", "batch_size=4", "--set", "device=cpu"]  # fmt: skip


@pytest.mark.slow
def test_one_cell_runs_in_a_child_of_the_parent_and_tabulates(mlflow_uri, tmp_path: Path) -> None:
    args = ["budget", "--variants", "micronet", "--datasets", "seg_cracks", "--seeds", "0", "--out", str(tmp_path)]
    result = CliRunner().invoke(study, args + CELL_SETTINGS)
    assert result.exit_code == 0, result.output
    assert "[1/1] micronet/seg_cracks/seed0: test_iou=" in result.output
    runs = mlflow.search_runs(["0"], output_format="list")
    parent = next(r for r in runs if r.data.tags.get("kiln.study") == "budget")
    child = next(r for r in runs if r.info.run_id != parent.info.run_id)
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.info.status == parent.info.status == "FINISHED"
    assert child.data.params["variant"] == "micronet" and child.data.params["sample"] == "seg_cracks"
    assert parent.data.metrics["params_micronet"] == 8_553
    assert "micronet_mean_test_iou" in parent.data.metrics
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id, "study")}
    assert {"study/cells.csv", "study/summary.csv", "study/summary.png", "study/summary.txt"} <= artifacts
    assert (tmp_path / "summary.csv").read_text().startswith("variant,distilled,parameters,seg_cracks_mean")

    again = CliRunner().invoke(study, args + CELL_SETTINGS + ["--resume", parent.info.run_id])
    assert again.exit_code == 0 and "seed0: test_iou=" in again.output and "(resumed)" in again.output, again.output
    assert len(mlflow.search_runs(["0"], output_format="list")) == 2  # no cell trained twice
    other = CliRunner().invoke(study, args + ["--resume", parent.info.run_id])
    assert other.exit_code == 1 and "the study was run with other set." in other.output


def test_a_variant_over_budget_stops_the_study_before_any_run(mlflow_uri) -> None:
    args = ["budget", "--variants", "micronet,mininet_50k", "--datasets", "seg_cracks", "--seeds", "0"]
    result = CliRunner().invoke(study, args)
    assert result.exit_code == 1
    assert "Error: microseg variant 'mininet_50k' has 50,015 parameters, over the budget of 10,000" in result.output
    assert mlflow.search_runs(["0"], output_format="list") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--datasets", "nope"], "dataset 'nope' is neither a folder nor a sample kind"),
        (["--set", "epochs"], "--set expects key=value, got 'epochs'"),
        (["--set", "no_such=1"], "unknown option 'no_such'"),
        (["--seeds", "a"], "expected comma-separated integers"),
        (["--teacher", "models:/ghost_{dataset}@production"], "--teacher models:/ghost_seg_cracks@production: "),
    ],
)
def test_bad_plans_are_one_line_errors(mlflow_uri, args: list[str], message: str) -> None:
    base = {"--variants": "micronet", "--datasets": "seg_cracks", "--seeds": "0"}
    for flag in args[::2]:
        base.pop(flag, None)
    flat = [t for kv in base.items() for t in kv]
    result = CliRunner().invoke(study, ["budget", *flat, *args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output


def fake_cells() -> list[Cell]:
    cells = []
    for dataset, base in (("a", 0.5), ("b", 0.7)):
        for seed in (0, 1, 2):
            plain = base + 0.01 * seed
            cells.append(Cell("v", dataset, seed, False, plain, "test_iou", 100, "r", 1.0))
            cells.append(Cell("v", dataset, seed, True, plain + 0.02 + 0.005 * (seed - 1), "test_iou", 100, "r", 1.0))
    return cells


def test_summary_and_distillation_effect_with_its_interval() -> None:
    plan = StudyPlan("microseg", ("v",), ("a", "b"), (0, 1, 2), teacher="models:/t@production")
    rows = summarise(fake_cells(), plan, {"v": 100})
    plain = next(r for r in rows if not r["distilled"])
    assert plain["a"][0] == pytest.approx(0.51) and plain["a"][1] == pytest.approx(0.01)
    assert plain["mean"][0] == pytest.approx(0.61)
    effects = {e["variant"]: e for e in distillation_effects(fake_cells(), plan)}
    assert effects["all"]["pairs"] == 6 and effects["all"]["effect"] == pytest.approx(0.02)
    assert effects["all"]["ci_low"] < 0.02 < effects["all"]["ci_high"] and effects["all"]["ci_low"] > 0.0
    mean, low, high = t_interval([1.0])
    assert mean == 1.0 and math.isinf(low) and math.isinf(high)
