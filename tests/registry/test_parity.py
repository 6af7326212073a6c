"""One scenario through the three front ends of the registry (`kiln`, the MLproject entry points, the jobs API):
the same outcomes and the same timeline, because the policies live in registry/ and the front ends only parse
and print.

.venv/bin/python -m pytest tests/registry/test_parity.py -q

The scenario: a first promotion of a version no better than its family's trivial baseline (it moves, with a
warning), a canary of a second version with one guard rail changed, a rollback (which ends the canary and leaves
production alone), then a promotion refused by its --min gate.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from core import vocab
from registry.canary import GuardRails, read_canary
from registry.promotion import history

MakeVersion = Callable[..., int]
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Outcome:
    """What a front end said about one step: did it succeed, what did it warn, what did it say went wrong."""

    ok: bool
    warnings: list[str]
    error: str = ""


def cli_step(args: list[str]) -> Outcome:
    from kiln.cli import main

    result = CliRunner().invoke(main, args)
    warnings = [line.removeprefix("warning: ") for line in result.stderr.splitlines() if line.startswith("warning:")]
    return Outcome(result.exit_code == 0, warnings, "" if result.exit_code == 0 else result.stderr.strip())


def mlproject_step(entry: str, params: dict[str, str]) -> Outcome:
    """Run an MLproject entry point's command the way `mlflow run` builds it (defaults, then -P values)."""
    import importlib

    spec = yaml.safe_load((REPO_ROOT / "MLproject").read_text())["entry_points"][entry]
    values = {k: str(v.get("default", "")) for k, v in spec["parameters"].items()} | params
    tokens = shlex.split(spec["command"])
    args = [re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], t) for t in tokens[3:]]
    command = importlib.import_module(tokens[2]).main
    result = CliRunner().invoke(command, args)
    warnings = [line.removeprefix("warning: ") for line in result.stderr.splitlines() if line.startswith("warning:")]
    return Outcome(result.exit_code == 0, warnings, "" if result.exit_code == 0 else result.stderr.strip())


def api_step(client: TestClient, method: str, path: str, body: dict[str, Any]) -> Outcome:
    response = client.request(method, path, json=body)
    data = response.json()
    ok = response.status_code == 200
    return Outcome(ok, list(data.get("warnings", [])) if ok else [], "" if ok else str(data.get("detail")))


def scenario(front: str, model: str, api: TestClient) -> list[Outcome]:
    """first promotion at the baseline, canary of v2 with min_requests 50, rollback, a refused --min gate."""
    if front == "cli":
        return [
            cli_step(["promote", model, "--version", "1"]),
            cli_step(["promote", model, "--version", "2", "--canary", "10", "--min-requests", "50"]),
            cli_step(["rollback", model]),
            cli_step(["promote", model, "--version", "2", "--min", "0.9"]),
        ]
    if front == "mlproject":
        return [
            mlproject_step("promote", {"model": model, "version": "1"}),
            mlproject_step(
                "promote", {"model": model, "version": "2", "canary": "10", "guards": '{"min_requests": 50}'}
            ),
            mlproject_step("rollback", {"model": model}),
            mlproject_step("promote", {"model": model, "version": "2", "min": "0.9"}),
        ]
    base = f"/api/models/{model}"
    return [
        api_step(api, "POST", f"{base}/promote", {"version": 1}),
        api_step(api, "POST", f"{base}/canary", {"version": 2, "percent": 10, "guards": {"min_requests": 50}}),
        api_step(api, "POST", f"{base}/rollback", {}),
        api_step(api, "POST", f"{base}/promote", {"version": 2, "min_value": 0.9}),
    ]


def timeline(client: MlflowClient, model: str) -> list[tuple[Any, ...]]:
    """The model's events without what differs by nature (time, model name)."""
    return [
        (e.action, e.alias, e.version, e.previous_version, e.by, e.reason.replace(model, "MODEL"), e.forced,
         e.metric, e.value, json.dumps(e.canary, sort_keys=True))
        for e in history(model, client=client)
    ]  # fmt: skip


@pytest.fixture
def api(registry_uri: str, tmp_path: Path) -> TestClient:
    from jobs.app import create_app
    from jobs.settings import Settings

    env = {"MLFLOW_TRACKING_URI": registry_uri, "KILN_JOBS_DB": str(tmp_path / "jobs.db")}
    return TestClient(create_app(Settings.from_env(env, project_dir=REPO_ROOT)))


def test_cli_mlproject_and_jobs_api_decide_and_record_alike(
    client: MlflowClient, make_version: MakeVersion, api: TestClient
) -> None:
    fronts = ("cli", "mlproject", "api")
    outcomes, timelines = {}, {}
    for front in fronts:
        model = f"det_{front}"
        baseline = {vocab.BASELINE: "0", vocab.BASELINE_KIND: "finds nothing", vocab.METRIC: "val_map"}
        make_version(model, {"val_map": 0.0}, run_tags=baseline)
        make_version(model, {"val_map": 0.6}, run_tags=baseline)
        steps = scenario(front, model, api)
        outcomes[front] = [(o.ok, [w.replace(model, "MODEL") for w in o.warnings]) for o in steps]
        timelines[front] = timeline(client, model)
        assert "refused to promote" in steps[3].error and "0.9" in steps[3].error, (front, steps[3])
        assert read_canary(client, model) is None
        assert str(client.get_registered_model(model).aliases["production"]) == "1"
    first_warning = outcomes["cli"][0][1]
    assert len(first_warning) == 1 and "no better than the trivial baseline 0 (finds nothing)" in first_warning[0]
    assert [ok for ok, _ in outcomes["cli"]] == [True, True, True, False]
    assert outcomes["mlproject"] == outcomes["cli"] and outcomes["api"] == outcomes["cli"]
    actions = [event[0] for event in timelines["cli"]]
    assert actions == ["promote", "canary-start", "canary-rollback"]  # a refused --min gate records nothing
    assert json.loads(timelines["cli"][1][-1])["guards"]["min_requests"] == 50
    assert timelines["mlproject"] == timelines["cli"] and timelines["api"] == timelines["cli"]


def test_every_guard_rail_has_a_flag_and_no_flag_spells_a_default() -> None:
    """The defaults belong to GuardRails alone: `kiln promote --help` names every rail and copies no number."""
    from registry.canary_cli import GUARD_FLAGS

    assert set(GUARD_FLAGS) == {f.name for f in fields(GuardRails)}
    assert not [text for _, _, text in GUARD_FLAGS.values() if re.search(r"\[[0-9.]+\]", text)]
