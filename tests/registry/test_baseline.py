"""A first promotion warns when the version is no better than its family's trivial baseline (`kiln.baseline`).

.venv/bin/python -m pytest tests/registry/test_baseline.py -q
"""

from __future__ import annotations

from collections.abc import Callable

from click.testing import CliRunner
from mlflow import MlflowClient

from kiln.cli import main
from registry.baseline import at_baseline, baseline_warning

MakeVersion = Callable[..., int]
HINT = {"kiln.metric": "best/mAP50", "kiln.mode": "max", "kiln.baseline": "0", "kiln.baseline_kind": "finds nothing"}


def test_at_baseline_counts_ties_and_follows_the_mode() -> None:
    assert at_baseline(0.0, 0.0, "max") and at_baseline(0.3, 0.32, "max") and not at_baseline(0.5, 0.32, "max")
    assert at_baseline(0.25, 0.25, "min") and not at_baseline(0.1, 0.25, "min")
    assert at_baseline(float("nan"), 0.0, "max")


def test_a_first_promotion_of_a_model_at_its_baseline_warns(make_version: MakeVersion, client: MlflowClient) -> None:
    v1 = make_version("det", {"best/mAP50": 0.0}, run_tags=HINT)
    result = CliRunner().invoke(main, ["promote", "det", "--version", str(v1)])
    assert result.exit_code == 0  # a warning, not a refusal
    assert "warning: det v1's best/mAP50 0 is no better than the trivial baseline 0 (finds nothing)" in result.output
    assert "kiln rollback det" in result.output
    assert int(client.get_model_version_by_alias("det", "production").version) == v1


def test_no_warning_above_the_baseline_or_without_one(make_version: MakeVersion, client: MlflowClient) -> None:
    good = make_version("det", {"best/mAP50": 0.4}, run_tags=HINT)
    assert baseline_warning(client, "det", good) is None
    untagged = make_version("seg", {"val_iou": 0.0}, run_tags={"kiln.metric": "val_iou"})
    assert baseline_warning(client, "seg", untagged) is None  # older runs carry no baseline: nothing to say
    result = CliRunner().invoke(main, ["promote", "det", "--version", str(good)])
    assert result.exit_code == 0 and "warning" not in result.output
