"""The `kiln promote/rollback/history/models` commands through click, mounted on the root `kiln` group.

.venv/bin/python -m pytest tests/registry/test_cli.py -q
"""

from __future__ import annotations

import json
from collections.abc import Callable

from click.testing import CliRunner, Result
from mlflow import MlflowClient

from kiln.cli import main

MakeVersion = Callable[..., int]  # the `make_version` fixture of tests/registry/conftest.py


def kiln(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_promote_prints_the_move_and_each_gate(make_version: MakeVersion) -> None:
    v1, v2 = make_version("seg", {"val_iou": 0.7}), make_version("seg", {"val_iou": 0.8})
    assert kiln("promote", "seg", "--version", str(v1)).exit_code == 0
    result = kiln("promote", "seg", "--version", str(v2), "--metric", "val_iou", "--mode", "max", "--min", "0.75")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "promoted seg production: v1 -> v2"
    assert lines[1] == "  metric: val_iou (higher is better; from --metric)"
    assert "ok   min: val_iou 0.8 >= --min 0.75" in result.output
    assert "ok   current: val_iou 0.8 vs production v1's 0.7" in result.output


def test_refusal_exits_1_with_both_numbers_and_force_overrides(client: MlflowClient, make_version: MakeVersion) -> None:
    v1, v2 = make_version("seg", {"val_iou": 0.8}), make_version("seg", {"val_iou": 0.6})
    kiln("promote", "seg", "--version", str(v1))
    refused = kiln("promote", "seg", "--version", str(v2), "--metric", "val_iou", "--min", "0.65")
    assert refused.exit_code == 1
    assert "val_iou 0.6 is below --min 0.65; val_iou 0.6 is worse than production v1's 0.8" in refused.output
    assert "Traceback" not in refused.output and refused.exception is not None  # SystemExit, not a crash
    forced = kiln("promote", "seg", "--version", str(v2), "--metric", "val_iou", "--force", "--reason", "demo")
    assert forced.exit_code == 0 and "(FORCED)" in forced.output and "override recorded: 1 failed gate" in forced.output
    assert client.get_model_version_by_alias("seg", "production").version in (v2, str(v2))


def test_bad_input_exits_2_naming_it_without_a_traceback(make_version: MakeVersion) -> None:
    make_version("seg", {"val_iou": 0.8})
    cases = {
        ("promote", "nope", "--version", "1"): "unknown registered model 'nope'",
        ("promote", "seg", "--version", "4"): "model 'seg' has no version 4",
        ("promote", "seg", "--run", "0123abcd"): "run '0123abcd' does not exist",
        ("promote", "seg", "--version", "1", "--metric", "val_dice", "--min", "0.1"): "metric 'val_dice' is not logged",
        ("rollback", "nope"): "unknown registered model 'nope'",
        ("history", "nope"): "unknown registered model 'nope'",
    }
    for args, message in cases.items():
        result = kiln(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output


def test_history_and_rollback(make_version: MakeVersion) -> None:
    v1, v2 = make_version("seg", {"val_iou": 0.7}), make_version("seg", {"val_iou": 0.8})
    kiln("promote", "seg", "--version", str(v1), "--reason", "first")
    kiln("promote", "seg", "--version", str(v2), "--metric", "val_iou")
    back = kiln("rollback", "seg", "--reason", "regression on site B")
    assert back.exit_code == 0 and back.output.startswith("rolled back seg production: v2 -> v1")
    again = kiln("rollback", "seg")
    assert again.exit_code == 1 and "no earlier version of production" in again.output
    shown = kiln("history", "seg").output.splitlines()
    assert shown[0].split()[:4] == ["WHEN", "(UTC)", "ALIAS", "ACTION"]
    assert "promote" in shown[1] and "- -> v1" in shown[1] and "tester" in shown[1] and "first" in shown[1]
    assert "val_iou=0.8 (was 0.7)" in shown[2]
    assert "rollback" in shown[3] and "v2 -> v1" in shown[3] and "regression on site B" in shown[3]
    assert shown[-1] == "now: production -> v1"
    events = json.loads(kiln("history", "seg", "--alias", "production", "--json").output)
    assert [e["action"] for e in events] == ["promote", "promote", "rollback"]


def test_models_table_and_json(make_version: MakeVersion) -> None:
    assert kiln("models").output.strip() == "no registered models"
    kiln("promote", "seg", "--version", str(make_version("seg", {"val_iou": 0.75, "val_loss": 0.25})))
    make_version("tab", {"auc": 0.9})
    lines = kiln("models").output.splitlines()
    assert lines[0].split() == ["MODEL", "LATEST", "ALIAS", "VERSION", "PROMOTED", "(UTC)", "METRICS"]
    assert lines[1].split()[:4] == ["seg", "v1", "production", "v1"] and lines[1].endswith("val_iou=0.75 val_loss=0.25")
    assert lines[2].split() == ["tab", "v1", "-", "v1", "-", "auc=0.9"]  # no alias yet: the latest version's metrics
    data = json.loads(kiln("models", "--json").output)
    assert data[0]["aliases"][0]["metrics"] == {"val_iou": 0.75, "val_loss": 0.25}
