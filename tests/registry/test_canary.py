"""Canary releases in the registry: start, step, finish through the gates, end by rollback or by a server, and
every event in the timeline; refusals name what is wrong.

.venv/bin/python -m pytest tests/registry/test_canary.py -q
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result
from mlflow import MlflowClient

from kiln.cli import main
from registry.canary import CANARY_ALIAS, CANARY_TAG, GuardRails, end_canary, read_canary, start_canary
from registry.errors import InvalidRequestError, PromotionRefusedError
from registry.promotion import history

MakeVersion = Callable[..., int]


def kiln(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_start_step_finish_through_the_cli(client: MlflowClient, make_version: MakeVersion) -> None:
    v1, v2 = make_version("seg", {"val_iou": 0.7}), make_version("seg", {"val_iou": 0.8})
    assert kiln("promote", "seg", "--version", str(v1)).exit_code == 0
    started = kiln("promote", "seg", "--version", str(v2), "--canary", "10", "--min-requests", "50")
    assert started.exit_code == 0, started.output
    assert "canary started: seg v2 gets 10% of the traffic, production v1 the rest" in started.output
    spec = read_canary(client, "seg")
    assert spec is not None and (spec.version, spec.percent, spec.production_version) == (2, 10.0, 1)
    assert spec.guards.min_requests == 50 and str(client.get_registered_model("seg").aliases[CANARY_ALIAS]) == "2"
    stepped = kiln("promote", "seg", "--canary", "50")
    assert stepped.exit_code == 0 and "canary step 1: seg v2 gets 50%" in stepped.output
    spec = read_canary(client, "seg")
    assert spec is not None and spec.guards.min_requests == 50  # a step keeps the guard rails
    finished = kiln("promote", "seg", "--finish-canary", "--metric", "val_iou")
    assert finished.exit_code == 0, finished.output
    assert "canary finished: seg production v1 -> v2" in finished.output
    model = client.get_registered_model("seg")
    assert (
        str(model.aliases["production"]) == "2" and CANARY_ALIAS not in model.aliases and CANARY_TAG not in model.tags
    )
    actions = [e.action for e in history("seg", client=client)]
    assert actions == ["promote", "canary-start", "canary-step", "promote", "canary-finish"]
    shown = kiln("history", "seg").output
    assert "canary-start 10%" in shown and "canary-step 50%" in shown and "canary-finish 50%" in shown


def test_finish_goes_through_the_gates(client: MlflowClient, make_version: MakeVersion) -> None:
    v1, v2 = make_version("seg", {"val_iou": 0.8}), make_version("seg", {"val_iou": 0.6})
    kiln("promote", "seg", "--version", str(v1))
    start_canary("seg", version=v2, percent=20, client=client)
    refused = kiln("promote", "seg", "--finish-canary", "--metric", "val_iou")
    assert refused.exit_code == 1 and "worse than production v1's 0.8" in refused.output
    assert read_canary(client, "seg") is not None  # a refused finish leaves the canary running
    with pytest.raises(PromotionRefusedError):
        from registry.promotion import finish_canary

        finish_canary("seg", metric="val_iou", client=client)


def test_rollback_ends_a_canary_and_keeps_production(client: MlflowClient, make_version: MakeVersion) -> None:
    v1, v2 = make_version("seg", {"val_iou": 0.7}), make_version("seg", {"val_iou": 0.8})
    kiln("promote", "seg", "--version", str(v1))
    start_canary("seg", version=v2, percent=10, client=client)
    ended = kiln("rollback", "seg")
    assert ended.exit_code == 0 and "ended the canary of seg v2; production stays on v1" in ended.output
    assert read_canary(client, "seg") is None
    assert str(client.get_registered_model("seg").aliases["production"]) == "1"
    assert history("seg", client=client)[-1].action == "canary-rollback"


def test_a_server_ends_a_canary_once_with_its_numbers(client: MlflowClient, make_version: MakeVersion) -> None:
    v1, v2 = make_version("seg", {"val_iou": 0.7}), make_version("seg", {"val_iou": 0.8})
    kiln("promote", "seg", "--version", str(v1))
    start_canary("seg", version=v2, percent=10, client=client)
    numbers = {"failed": "error_rate", "numbers": {"candidate_error_rate": 0.4, "candidate_requests": 20}}
    assert end_canary("seg", version=99, numbers=numbers, client=client) is None  # another canary: left alone
    event = end_canary("seg", reason="guard rail error_rate", numbers=numbers, version=v2, client=client)
    assert event is not None and event.canary is not None and event.canary["failed"] == "error_rate"
    assert end_canary("seg", version=v2, client=client) is None  # the second server finds it ended
    row = [line for line in kiln("history", "seg").output.splitlines() if "canary-rollback" in line][0]
    assert "error_rate: candidate_error_rate=0.4 candidate_requests=20" in row
    data = json.loads(kiln("history", "seg", "--json").output)
    assert data[-1]["canary"]["numbers"]["candidate_error_rate"] == 0.4


def test_refusals_name_the_problem(client: MlflowClient, make_version: MakeVersion) -> None:
    v1, v2, v3 = (make_version("seg", {"val_iou": 0.7}) for _ in range(3))
    with pytest.raises(InvalidRequestError, match="no production version"):
        start_canary("seg", version=v2, percent=10, client=client)
    kiln("promote", "seg", "--version", str(v1))
    with pytest.raises(InvalidRequestError, match="already holds production"):
        start_canary("seg", version=v1, percent=10, client=client)
    start_canary("seg", version=v2, percent=10, client=client)
    with pytest.raises(InvalidRequestError, match="a canary of seg v2 at 10% is running"):
        start_canary("seg", version=v3, percent=10, client=client)
    with pytest.raises(InvalidRequestError, match="max_error_rate"):
        GuardRails(max_error_rate=2).checked()
    bad = kiln("promote", "seg", "--version", str(v3), "--canary", "150")
    assert bad.exit_code == 2 and "150" in bad.output
    both = kiln("promote", "seg", "--canary", "20", "--finish-canary")
    assert both.exit_code == 2 and "not both" in both.output
    nothing = kiln("promote", "other", "--finish-canary")
    assert nothing.exit_code == 2 and "other" in nothing.output


def test_rollback_to_a_version_ends_the_canary_too(client: MlflowClient, make_version: MakeVersion) -> None:
    from registry.errors import VersionNotFoundError
    from registry.promotion import promote, rollback

    v1, v2, v3 = (make_version("seg", {"val_iou": 0.7}) for _ in range(3))
    promote("seg", version=v1, client=client)
    promote("seg", version=v2, metric="val_iou", client=client)
    start_canary("seg", version=v3, percent=10, client=client)
    with pytest.raises(VersionNotFoundError):
        rollback("seg", to_version=9, client=client)
    assert read_canary(client, "seg") is not None  # a refused rollback leaves the canary running
    result = rollback("seg", to_version=v1, client=client)
    assert result.moved and result.version == v1 and result.ended_canary is not None
    assert read_canary(client, "seg") is None
    actions = [e.action for e in history("seg", client=client)]
    assert actions[-2:] == ["canary-rollback", "rollback"]
