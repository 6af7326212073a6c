"""The run advisor: each diagnosis on a run whose metric histories produce it, and no false alarm on a healthy run.

.venv/bin/python -m pytest tests/experiments/test_advise.py -q
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from experiments.advise import ADVICE_TAG, advise, log_advice

EPOCHS = 12


def make_run(
    client: MlflowClient,
    series: Mapping[str, Sequence[float]],
    params: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    experiment_id: str = "0",
    first_step: int = 1,
    default_params: bool = True,
) -> str:
    """A FINISHED run with the given per-step metric histories (steps first_step, first_step+1, ...)."""
    base_tags = {"kiln.family": "edgnet", "kiln.variant": "edgnet", "kiln.metric": "best_val_iou", "kiln.mode": "max"}
    run = client.create_run(experiment_id, tags={**base_tags, **(tags or {})})
    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(v), now + i, first_step + i) for key, values in series.items() for i, v in enumerate(values)
    ]
    defaults = {"epochs": str(EPOCHS), "lr": "0.001", "patience": "0", "batch_size": "8"} if default_params else {}
    all_params = {**defaults, **(params or {})}
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in all_params.items()])
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def decay(first: float, floor: float, tau: float, n: int = EPOCHS) -> list[float]:
    return [floor + (first - floor) * math.exp(-t / tau) for t in range(1, n + 1)]


def rise(top: float, tau: float, n: int = EPOCHS) -> list[float]:
    return [top * (1 - math.exp(-t / tau)) for t in range(1, n + 1)]


def healthy() -> dict[str, list[float]]:
    return {
        "train_loss": decay(1.2, 0.2, 4),
        "val_loss": decay(1.25, 0.25, 4),
        "val_iou": rise(0.9, 3),
        "system/cpu_utilization_percentage": [85.0, 90.0, 88.0, 91.0],
    }


def kinds(client: MlflowClient, run_id: str) -> list[str]:
    return advise(run_id, client=client, compare=False).kinds()


@pytest.fixture
def client(mlflow_uri: str) -> MlflowClient:
    return MlflowClient(mlflow_uri)


def test_healthy_run_gets_no_finding(client: MlflowClient) -> None:
    run_id = make_run(client, healthy())
    advice = advise(run_id, client=client, compare=False)
    assert advice.findings == []
    assert "val_iou (max) best 0.8" in advice.headline


def test_overfitting(client: MlflowClient) -> None:
    series = healthy()
    series["val_loss"] = [1.0, 0.7, 0.5, 0.4, 0.38, 0.4, 0.45, 0.5, 0.55, 0.6, 0.63, 0.66]
    finding = next(f for f in advise(make_run(client, series), client=client, compare=False).findings)
    assert finding.kind == "overfitting"
    assert finding.evidence["val_min_step"] == 5
    assert finding.overrides["epochs"] == "5"
    assert "epoch 5" in finding.summary and "+64%" in finding.summary
    assert "-P epochs=5" in finding.command and finding.command.startswith("mlflow run . -e edgnet")


def test_underfitting(client: MlflowClient) -> None:
    series = healthy()
    series["train_loss"] = [1.0, 0.8, 0.72, 0.7, 0.69, 0.69, 0.69, 0.69, 0.69, 0.69, 0.69, 0.69]
    series["val_loss"] = [1.0, 0.82, 0.74, 0.72, 0.71, 0.71, 0.71, 0.71, 0.71, 0.71, 0.71, 0.71]
    assert "underfitting" in kinds(client, make_run(client, series))


def test_divergence_on_a_loss_spike(client: MlflowClient) -> None:
    series = healthy()
    series["train_loss"][6] = series["train_loss"][5] * 3
    advice = advise(make_run(client, series), client=client, compare=False)
    assert advice.kinds() == ["divergence"]
    assert advice.findings[0].evidence["step"] == 7
    assert advice.findings[0].overrides == {"lr": "0.0003"}


def test_divergence_on_nan(client: MlflowClient) -> None:
    series = healthy()
    series["train_loss"] = [*series["train_loss"][:4], float("nan")]
    series["val_loss"] = series["val_loss"][:5]
    series["val_iou"] = series["val_iou"][:5]
    assert kinds(client, make_run(client, series)) == ["divergence"]


def test_lr_too_high(client: MlflowClient) -> None:
    series = healthy()
    series["train_loss"] = [1.0, 0.8, 0.9, 0.7, 0.85, 0.65, 0.8, 0.6, 0.75, 0.58, 0.7, 0.56]
    found = advise(make_run(client, series), client=client, compare=False)
    assert "lr_too_high" in found.kinds()
    assert next(f for f in found.findings if f.kind == "lr_too_high").overrides == {"lr": "0.0003"}


def test_lr_too_low(client: MlflowClient) -> None:
    series = healthy()
    series["train_loss"] = [1.0 - 0.02 * t for t in range(EPOCHS)]
    series["val_loss"] = [1.02 - 0.02 * t for t in range(EPOCHS)]
    found = advise(make_run(client, series), client=client, compare=False)
    assert "lr_too_low" in found.kinds()
    assert next(f for f in found.findings if f.kind == "lr_too_low").overrides == {"lr": "0.003"}


def test_plateau(client: MlflowClient) -> None:
    series = healthy()
    series["val_iou"] = [0.3, 0.6, 0.75, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
    found = advise(make_run(client, series), client=client, compare=False)
    assert found.kinds() == ["plateau"]
    assert found.findings[0].evidence["reached_step"] == 4
    assert found.findings[0].overrides == {"epochs": "5"}


def test_still_improving(client: MlflowClient) -> None:
    series = healthy()
    series["val_iou"] = [0.05 * t for t in range(1, EPOCHS + 1)]
    found = advise(make_run(client, series), client=client, compare=False)
    assert found.kinds() == ["still_improving"]
    assert found.findings[0].overrides == {"epochs": "24"}


def test_stopped_early(client: MlflowClient) -> None:
    iou = [0.3, 0.36, 0.41, 0.45, 0.5, 0.52, 0.56, 0.585, 0.61]
    series = {"train_loss": decay(1.2, 0.2, 4, 9), "val_loss": decay(1.25, 0.25, 4, 9), "val_iou": iou}
    found = advise(make_run(client, series, params={"epochs": "30", "patience": "2"}), client=client, compare=False)
    assert found.kinds() == ["stopped_early"]
    assert found.findings[0].overrides == {"patience": "6"}
    assert found.findings[0].evidence["epochs_run"] == 9


def test_data_bound(client: MlflowClient) -> None:
    series = {**healthy(), "system/gpu_0_utilization_percentage": [22.0, 18.0, 25.0, 20.0]}
    found = advise(make_run(client, series), client=client, compare=False)
    assert found.kinds() == ["data_bound"]
    assert found.findings[0].overrides == {"batch_size": "16"}


def test_noisy_validation(client: MlflowClient) -> None:
    series = healthy()
    series["val_iou"] = [0.5, 0.7, 0.45, 0.72, 0.5, 0.74, 0.48, 0.7, 0.52, 0.73, 0.5, 0.72]
    found = advise(make_run(client, series), client=client, compare=False)
    assert "noisy_validation" in found.kinds()
    assert "kiln cv edgnet --folds 5" in next(f for f in found.findings if f.kind == "noisy_validation").extra


def test_skinmodel_rounds_and_command_line(client: MlflowClient) -> None:
    """XGBoost logs 0-based rounds under its own names; overrides use its knob names."""
    val = [0.6, 0.45, 0.38, 0.35, 0.34, 0.36, 0.4, 0.45, 0.5, 0.55]
    series = {"train_logloss": [0.6 - 0.05 * t for t in range(10)], "val_logloss": val,
              "val_auc": [0.9, 0.93, 0.95, 0.96, 0.965, 0.96, 0.955, 0.95, 0.948, 0.946]}  # fmt: skip
    tags = {"kiln.family": "skinmodel", "kiln.metric": "val_auc", "kiln.mode": "max", "kiln.variant": ""}
    tags["mlflow.project.entryPoint"] = "skinmodel"
    params = {"n_estimators": "10", "learning_rate": "0.3", "max_depth": "4", "early_stopping_rounds": "0"}
    found = advise(
        make_run(client, series, params, tags, first_step=0, default_params=False), client=client, compare=False
    )
    over = next(f for f in found.findings if f.kind == "overfitting")
    assert "round 4" in over.summary
    assert over.overrides == {"n_estimators": "5", "max_depth": "3", "early_stopping_rounds": "3"}
    assert "-P learning_rate=0.3" in over.command and "-P n_estimators=5" in over.command


def test_comparison_names_changed_params(client: MlflowClient) -> None:
    runs = []
    for lr, iou in (("0.001", 0.5), ("0.003", 0.7), ("0.01", 0.8)):
        series = healthy()
        runs.append(make_run(client, {**series, "best_val_iou": [iou]}, params={"lr": lr}))
    advice = advise(runs[0], client=client)
    comp = advice.comparison
    assert comp is not None and comp.runs == 3 and comp.rank == 3
    assert comp.best == (runs[2], 0.8) and comp.changed == {"lr": ("0.001", "0.01")}
    assert comp.correlations["lr"] == (1.0, 3)
    assert "lr: 0.001 -> 0.01" in advice.markdown()


def test_cli_json_logs_advice(client: MlflowClient, mlflow_uri: str) -> None:
    from kiln.cli import main

    series = healthy()
    series["val_iou"] = [0.3, 0.6, 0.75, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
    run_id = make_run(client, series)
    result = CliRunner().invoke(main, ["advise", run_id, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [f["kind"] for f in data["findings"]] == ["plateau"]
    assert client.get_run(run_id).data.tags[ADVICE_TAG] == "plateau"
    path = client.download_artifacts(run_id, "advice.md")
    assert "## plateau" in Path(path).read_text()


def test_cli_unknown_run_is_one_line(mlflow_uri: str) -> None:
    from kiln.cli import main

    result = CliRunner().invoke(main, ["advise", "0123456789abcdef"])
    assert result.exit_code == 1
    assert "Error: run '0123456789abcdef' cannot be read" in result.output
    assert "Traceback" not in result.output


def test_log_advice_marks_healthy(client: MlflowClient) -> None:
    run_id = make_run(client, healthy())
    log_advice(advise(run_id, client=client, compare=False), client)
    assert client.get_run(run_id).data.tags[ADVICE_TAG] == "healthy"
