"""The significance gate: refuse a noise-level "improvement", accept a real one, say why when it cannot judge.

.venv/bin/python -m pytest tests/registry/test_significance.py -q
"""

from __future__ import annotations

import json

import mlflow
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from scipy import stats

from registry.cli import promote_command
from registry.errors import InvalidRequestError, PromotionRefusedError
from registry.history import alias_stack
from registry.promotion import history, promote, rollback
from registry.significance import CV_VALUES_TAG, PARENT_TAG, welch
from tests.registry.conftest import MakeVersion

HOLDER = [0.80, 0.82, 0.79, 0.81, 0.78]
NOISE = [0.81, 0.83, 0.78, 0.80, 0.82]  # mean +0.008, well inside the spread
REAL = [0.88, 0.90, 0.87, 0.89, 0.91]


def cv_version(client: MlflowClient, make_version: MakeVersion, model: str, values: list[float]) -> int:
    """A kiln-cv-shaped version: a parent run holding the per-fold values, the registered fold run under it."""
    experiment = client.get_experiment_by_name("registry-tests")
    parent = client.create_run(experiment.experiment_id if experiment else "0")
    client.set_tag(parent.info.run_id, CV_VALUES_TAG + "val_iou", json.dumps(values))
    client.set_tag(parent.info.run_id, "kiln.cv.kind", "folds")
    client.set_terminated(parent.info.run_id)
    closest = min(values, key=lambda v: abs(v - sum(values) / len(values)))
    tags = {PARENT_TAG: parent.info.run_id, "kiln.metric": "val_iou", "kiln.mode": "max"}
    return make_version(model, {"val_iou": closest}, run_tags=tags)


def seeded_runs(model: str, params: dict[str, str], values: list[float], client: MlflowClient) -> int:
    """Several runs of one config (seeds differ); the last one is registered. Needs make_version's experiment."""
    experiment = client.get_experiment_by_name("registry-tests")
    assert experiment is not None
    for seed, value in enumerate(values):
        with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
            mlflow.log_params({**params, "seed": seed})
            mlflow.log_metric("val_iou", value)
            mlflow.set_tags({"kiln.metric": "val_iou", "kiln.mode": "max"})
            mlflow.log_text("flavors: {}\n", "model/MLmodel")
    if not client.search_registered_models(f"name = '{model}'"):
        client.create_registered_model(model)
    return int(client.create_model_version(model, f"{run.info.artifact_uri}/model", run_id=run.info.run_id).version)


def test_welch_matches_scipy() -> None:
    verdict = welch(REAL, HOLDER, "max", 0.05)
    expected = stats.ttest_ind(REAL, HOLDER, equal_var=False, alternative="greater")
    assert verdict.p_value == pytest.approx(expected.pvalue)
    assert verdict.significant and verdict.ci_low > 0
    lower = welch([0.2, 0.21, 0.19], [0.3, 0.31, 0.29], "min", 0.05)  # a loss: lower is better
    assert lower.significant and lower.diff == pytest.approx(-0.1)


def test_fold_values_get_the_nadeau_bengio_variance_and_seeds_do_not() -> None:
    plain = welch(REAL, HOLDER, "max", 0.05)
    folds = welch(REAL, HOLDER, "max", 0.05, candidate_kind="folds", holder_kind="folds")
    assert folds.correction == "_nadeau_bengio" and plain.correction == ""
    assert folds.p_value > plain.p_value and folds.df == pytest.approx(plain.df)
    assert (folds.ci_high - folds.ci_low) == pytest.approx(1.5 * (plain.ci_high - plain.ci_low))  # sqrt(1 + 5/4)
    assert welch(REAL, HOLDER, "max", candidate_kind="seeds").p_value == pytest.approx(plain.p_value)


def test_refuses_noise_level_improvement(client: MlflowClient, make_version: MakeVersion) -> None:
    holder = cv_version(client, make_version, "seg", HOLDER)
    promote("seg", version=holder)
    candidate = cv_version(client, make_version, "seg", NOISE)
    with pytest.raises(PromotionRefusedError) as err:
        promote("seg", version=candidate, significance=0.05)
    text = err.value.detail
    assert "v2 0.808 ± 0.019 (n=5" in text and "v1 0.8 ± 0.016 (n=5" in text
    assert "difference +0.008" in text and "90% CI -0.0" in text and "not significant at 0.05" in text
    # 5 folds each: Nadeau-Bengio's variance s^2 (1/5 + 1/4), the t statistic of plain Welch shrunk by 1/sqrt(2.25)
    plain = stats.ttest_ind(NOISE, HOLDER, equal_var=False, alternative="greater")
    p_value = stats.t.sf(plain.statistic / 1.5, plain.df)
    assert f"Nadeau-Bengio fold correction) p={p_value:.3g}" in text
    events = history("seg")
    assert [e.action for e in events] == ["promote", "refused"]
    assert events[-1].significance is not None and events[-1].significance["p_value"] == pytest.approx(p_value)
    assert client.get_registered_model("seg").aliases["production"] == holder


def test_accepts_real_improvement(client: MlflowClient, make_version: MakeVersion) -> None:
    holder = cv_version(client, make_version, "seg", HOLDER)
    promote("seg", version=holder)
    candidate = cv_version(client, make_version, "seg", REAL)
    result = promote("seg", version=candidate, significance=0.05)
    assert result.moved and result.significance is not None and result.significance["significant"]
    assert [c.gate for c in result.checks] == ["significance"]  # it supersedes the single-value comparison
    event = history("seg")[-1]
    assert event.action == "promote" and event.significance is not None and event.significance["p_value"] < 0.001
    assert "significant at 0.05" in client.get_model_version("seg", str(candidate)).tags["significance"]


def test_replicate_runs_of_one_config_count_as_draws(client: MlflowClient, make_version: MakeVersion) -> None:
    holder = seeded_runs("tab", {"lr": "0.1"}, HOLDER, client)
    promote("tab", version=holder)
    candidate = seeded_runs("tab", {"lr": "0.3"}, REAL, client)
    result = promote("tab", version=candidate, significance=0.05)
    assert result.significance is not None
    assert result.significance["candidate_n"] == 5 and "5 runs of the same config" in result.significance["detail"]


def test_cannot_judge_single_runs(client: MlflowClient, make_version: MakeVersion) -> None:
    tags = {"kiln.metric": "val_iou", "kiln.mode": "max"}
    holder = make_version("one", {"val_iou": 0.7}, run_tags=tags)
    promote("one", version=holder)
    candidate = make_version("one", {"val_iou": 0.9}, run_tags=tags)
    with pytest.raises(PromotionRefusedError, match="cannot judge significance: v2: its source run .* is neither"):
        promote("one", version=candidate, significance=0.05)
    assert promote("one", version=candidate).moved  # without --significance the usual gates decide


def test_refused_events_do_not_enter_the_rollback_stack(client: MlflowClient, make_version: MakeVersion) -> None:
    v1 = cv_version(client, make_version, "seg", HOLDER)
    promote("seg", version=v1)
    v2 = cv_version(client, make_version, "seg", REAL)
    promote("seg", version=v2, significance=0.05)
    v3 = cv_version(client, make_version, "seg", [*REAL[:4], 0.9])
    with pytest.raises(PromotionRefusedError):
        promote("seg", version=v3, significance=0.05)
    assert alias_stack(history("seg"), "production") == [v1, v2]
    assert rollback("seg").version == v1


def test_bad_level_is_refused(client: MlflowClient, make_version: MakeVersion) -> None:
    make_version("one", {"val_iou": 0.7})
    with pytest.raises(InvalidRequestError, match="between 0 and 0.5"):
        promote("one", version=1, significance=1.5)


def test_cli_reports_the_numbers(client: MlflowClient, make_version: MakeVersion) -> None:
    promote("seg", version=cv_version(client, make_version, "seg", HOLDER))
    candidate = cv_version(client, make_version, "seg", NOISE)
    result = CliRunner().invoke(promote_command, ["seg", "--version", str(candidate), "--significance", "0.05"])
    assert result.exit_code == 1
    assert "not significant at 0.05" in result.output and "Traceback" not in result.output
    real = cv_version(client, make_version, "seg", REAL)
    ok = CliRunner().invoke(promote_command, ["seg", "--version", str(real), "--significance", "0.05"])
    assert ok.exit_code == 0, ok.output
    assert "ok   significance: val_iou: v3 0.89" in ok.output
