"""Promotion and rollback against a real sqlite registry: gates, the override record, tags, history.

.venv/bin/python -m pytest tests/registry/test_promotion.py -q
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from mlflow import MlflowClient

from registry.errors import (
    InvalidRequestError,
    MetricMissingError,
    MetricRequiredError,
    ModelNotFoundError,
    NoRegisteredVersionError,
    NothingToRollBackError,
    PromotionRefusedError,
    RunNotFoundError,
    VersionNotFoundError,
)
from registry.promotion import history, promote, rollback, set_metric_hint

MakeVersion = Callable[..., int]  # the `make_version` fixture of tests/registry/conftest.py


def holder(client: MlflowClient, model: str, alias: str = "production") -> int:
    return int(client.get_model_version_by_alias(model, alias).version)


def version_tags(client: MlflowClient, model: str, version: int) -> dict[str, str]:
    return dict(client.get_model_version(model, str(version)).tags)


def test_first_promotion_needs_no_metric_and_tags_the_version(client: MlflowClient, make_version: MakeVersion) -> None:
    v1 = make_version("seg", {"val_iou": 0.7})
    result = promote("seg", version=v1, reason="first model")
    assert (result.moved, result.previous_version, result.checks) == (True, None, ())
    assert holder(client, "seg") == v1
    tags = version_tags(client, "seg", v1)
    assert tags["promoted_by"] == "tester" and tags["reason"] == "first model"
    assert tags["previous_version"] == "none" and tags["forced"] == "false" and tags["promoted_alias"] == "production"
    assert tags["promoted_at"].startswith("20") and tags["promotion_action"] == "promote"


def test_better_candidate_replaces_current(client: MlflowClient, make_version: MakeVersion) -> None:
    v1, v2 = make_version("seg", {"val_iou": 0.7}), make_version("seg", {"val_iou": 0.75})
    promote("seg", version=v1)
    result = promote("seg", version=v2, metric="val_iou", min_value=0.6)
    assert holder(client, "seg") == v2 and result.previous_version == v1
    assert [c.gate for c in result.checks] == ["min", "current"] and all(c.passed for c in result.checks)
    assert (result.value, result.previous_value) == (0.75, 0.7)
    assert version_tags(client, "seg", v2)["previous_version"] == str(v1)


def test_below_min_is_refused_with_both_numbers(client: MlflowClient, make_version: MakeVersion) -> None:
    v1 = make_version("seg", {"val_iou": 0.61})
    with pytest.raises(PromotionRefusedError) as info:
        promote("seg", version=v1, metric="val_iou", min_value=0.65)
    assert "val_iou 0.61 is below --min 0.65" in info.value.detail and info.value.status_code == 409
    assert client.get_registered_model("seg").aliases == {}
    assert history("seg") == [] and "promoted_at" not in version_tags(client, "seg", v1)


def test_worse_than_current_is_refused_and_nothing_moves(client: MlflowClient, make_version: MakeVersion) -> None:
    v1, v2 = make_version("seg", {"val_iou": 0.8}), make_version("seg", {"val_iou": 0.72})
    promote("seg", version=v1)
    with pytest.raises(PromotionRefusedError, match=r"val_iou 0.72 is worse than production v1's 0.8"):
        promote("seg", version=v2, metric="val_iou")
    assert holder(client, "seg") == v1 and len(history("seg")) == 1


def test_force_overrides_and_the_override_is_recorded(client: MlflowClient, make_version: MakeVersion) -> None:
    v1, v2 = make_version("seg", {"val_iou": 0.8}), make_version("seg", {"val_iou": 0.72})
    promote("seg", version=v1)
    result = promote("seg", version=v2, metric="val_iou", force=True, reason="hotfix for label bug")
    assert holder(client, "seg") == v2 and result.forced
    tags = version_tags(client, "seg", v2)
    assert tags["forced"] == "true" and "worse than production v1's 0.8" in tags["forced_over"]
    last = history("seg")[-1]
    assert last.forced and last.overridden == ("val_iou 0.72 is worse than production v1's 0.8 (higher is better)",)
    assert (last.value, last.previous_value, last.reason) == (0.72, 0.8, "hotfix for label bug")


def test_metric_hint_from_the_training_run_decides_and_lower_loss_wins(
    client: MlflowClient, make_version: MakeVersion
) -> None:
    hint = {"kiln.metric": "val_loss", "kiln.mode": "min"}
    v1 = make_version("reg", {"val_loss": 0.3}, run_tags=hint)
    v2 = make_version("reg", {"val_loss": 0.4}, run_tags=hint)
    v3 = make_version("reg", {"val_loss": 0.2}, run_tags=hint)
    promote("reg", version=v1)
    with pytest.raises(PromotionRefusedError, match="0.4 is worse than production v1's 0.3 \\(lower is better\\)"):
        promote("reg", version=v2)
    result = promote("reg", version=v3)
    assert result.metric is not None and result.metric.source == "run tag kiln.metric"
    assert holder(client, "reg") == v3


def test_model_tag_hint_set_through_the_api(make_version: MakeVersion) -> None:
    v1, v2 = make_version("tab", {"val_auc": 0.9}), make_version("tab", {"val_auc": 0.85})
    set_metric_hint("tab", "val_auc")
    promote("tab", version=v1)
    with pytest.raises(PromotionRefusedError, match="val_auc 0.85 is worse"):
        promote("tab", version=v2)


def test_a_held_alias_without_any_metric_asks_for_one(make_version: MakeVersion) -> None:
    v1, v2 = make_version("seg", {"val_iou": 0.8}), make_version("seg", {"val_iou": 0.9})
    promote("seg", version=v1)
    with pytest.raises(MetricRequiredError, match="production of seg is held by v1"):
        promote("seg", version=v2)
    with pytest.raises(MetricRequiredError, match="--min/--max need a metric"):
        promote("seg", version=v2, min_value=0.5)
    assert promote("seg", version=v2, force=True).forced  # --force without a metric skips the gates


def test_missing_metric_on_the_run_is_named(make_version: MakeVersion) -> None:
    v1 = make_version("seg", {"val_iou": 0.8, "val_loss": 0.1})
    with pytest.raises(MetricMissingError, match=r"metric 'val_dice' is not logged on run \w+ \(source of seg v1\)"):
        promote("seg", version=v1, metric="val_dice", min_value=0.5)
    with pytest.raises(MetricMissingError, match="val_iou, val_loss"):
        promote("seg", version=v1, metric="val_dice")


def test_current_version_without_the_metric_refuses(make_version: MakeVersion) -> None:
    v1, v2 = make_version("seg", {"val_loss": 0.1}), make_version("seg", {"val_iou": 0.9})
    promote("seg", version=v1)
    with pytest.raises(PromotionRefusedError, match="cannot compare with production v1: its source run has no val_iou"):
        promote("seg", version=v2, metric="val_iou")


def test_promote_by_run_id(client: MlflowClient, make_version: MakeVersion) -> None:
    v1 = make_version("seg", {"val_iou": 0.8})
    run_id = client.get_model_version("seg", str(v1)).run_id
    assert promote("seg", run_id=run_id, alias="staging").version == v1
    assert holder(client, "seg", "staging") == v1
    assert "production" not in client.get_registered_model("seg").aliases


def test_staging_and_production_move_independently(client: MlflowClient, make_version: MakeVersion) -> None:
    v1, v2 = make_version("seg", {"val_iou": 0.8}), make_version("seg", {"val_iou": 0.9})
    promote("seg", version=v1)
    promote("seg", version=v2, alias="challenger", metric="val_iou")
    assert (holder(client, "seg"), holder(client, "seg", "challenger")) == (v1, v2)
    assert [e.alias for e in history("seg")] == ["production", "challenger"]
    assert [e.version for e in history("seg", alias="challenger")] == [v2]


def test_promoting_the_holder_again_changes_nothing(make_version: MakeVersion) -> None:
    v1 = make_version("seg", {"val_iou": 0.8})
    promote("seg", version=v1)
    result = promote("seg", version=v1, metric="val_iou", min_value=0.99)
    assert not result.moved and result.event is None and len(history("seg")) == 1


def test_bad_input_is_named(client: MlflowClient, make_version: MakeVersion) -> None:
    v1 = make_version("seg", {"val_iou": 0.8})
    with pytest.raises(ModelNotFoundError, match="unknown registered model 'segg'; registered models: seg"):
        promote("segg", version=1)
    with pytest.raises(VersionNotFoundError, match="model 'seg' has no version 7"):
        promote("seg", version=7)
    with pytest.raises(InvalidRequestError, match="version 'three' is not a positive whole number"):
        promote("seg", version="three")
    with pytest.raises(InvalidRequestError, match="exactly one of --version or --run"):
        promote("seg", version=v1, run_id="abc")
    with pytest.raises(InvalidRequestError, match="exactly one of --version or --run"):
        promote("seg")
    with pytest.raises(RunNotFoundError, match="run 'f00d' does not exist"):
        promote("seg", run_id="f00d")
    for alias in ("latest", "v2", "prod uction"):
        with pytest.raises(InvalidRequestError, match=repr(alias)):
            promote("seg", version=v1, alias=alias)


def test_a_run_with_no_registered_version_is_named(client: MlflowClient, make_version: MakeVersion) -> None:
    make_version("seg", {"val_iou": 0.8})
    other = client.get_model_version("seg", "1").run_id
    client.create_registered_model("other")
    with pytest.raises(NoRegisteredVersionError, match=f"run '{other}' has no registered version of model 'other'"):
        promote("other", run_id=other)


def test_rollback_walks_back_through_promotions_and_is_recorded(
    client: MlflowClient, make_version: MakeVersion
) -> None:
    v1, v2, v3 = (make_version("seg", {"val_iou": x}) for x in (0.7, 0.8, 0.9))
    for v in (v1, v2, v3):
        promote("seg", version=v, metric="val_iou")
    result = rollback("seg", reason="v3 misses thin lines")
    assert (result.action, result.version, result.previous_version) == ("rollback", v2, v3)
    assert holder(client, "seg") == v2
    tags = version_tags(client, "seg", v2)
    assert tags["promotion_action"] == "rollback" and tags["previous_version"] == str(v3)
    assert tags["reason"] == "v3 misses thin lines"
    assert rollback("seg").version == v1
    assert version_tags(client, "seg", v1)["reason"] == f"rollback from v{v2}"
    with pytest.raises(NothingToRollBackError, match="no earlier version of production"):
        rollback("seg")
    moves = [(e.action, e.version, e.previous_version) for e in history("seg", alias="production")]
    assert moves == [("promote", 1, None), ("promote", 2, 1), ("promote", 3, 2), ("rollback", 2, 3), ("rollback", 1, 2)]


def test_rollback_to_a_chosen_version_and_of_a_deleted_one(client: MlflowClient, make_version: MakeVersion) -> None:
    v1, v2, v3 = (make_version("seg", {"val_iou": x}) for x in (0.7, 0.8, 0.9))
    for v in (v1, v2, v3):
        promote("seg", version=v, metric="val_iou")
    assert rollback("seg", to_version=v1).version == v1
    promote("seg", version=v3, metric="val_iou")
    client.delete_model_version("seg", str(v1))
    with pytest.raises(NothingToRollBackError, match="v1, has been deleted; pass --to VERSION"):
        rollback("seg")
    with pytest.raises(NothingToRollBackError, match="v3 already holds production"):
        rollback("seg", to_version=v3)


def test_rollback_of_an_alias_never_set(make_version: MakeVersion) -> None:
    make_version("seg", {"val_iou": 0.7})
    with pytest.raises(NothingToRollBackError, match="no earlier version of staging"):
        rollback("seg", alias="staging")
