"""The `promote` MLproject entry point: a gated alias move that leaves a run behind as its audit record.

    mlflow run . -e promote --env-manager local -P model=edgnet -P version=3 -P metric=val_iou -P min=0.7
    mlflow run . -e promote --env-manager local -P model=edgnet -P version=5 -P significance=0.05
    mlflow run . -e promote --env-manager local -P model=edgnet -P version=6 -P canary=10 \
        -P guards='{"min_requests": 50}'
    python -m registry.promote --model edgnet --version 3 --metric val_iou --min 0.7

MLproject parameters cannot be absent, so an empty string means "not given" for every optional flag, and
`--force` takes a value (true/false). Under `mlflow run` the outcome is also written to the run that
`mlflow run` created: tags `kiln.promotion.*` and a note, and a refused promotion fails that run.
The policies (gates, warnings, guard-rail defaults and merge) are registry/'s; this module parses and prints,
as `kiln promote` and the jobs API do. Warnings go to stderr and into the run's note.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click
from mlflow import MlflowClient

from core import vocab
from registry.canary_cli import canary_command, describe_canary
from registry.cli import describe_result, echo_warnings, reported
from registry.errors import RegistryError
from registry.promotion import DEFAULT_ALIAS, PromotionResult, promote

NOTE_TAG = vocab.NOTE_TAG


def optional(text: str) -> str | None:
    return text.strip() or None


def optional_float(text: str, flag: str) -> float | None:
    if not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a number", param_hint=flag) from None


def optional_guards(text: str) -> dict[str, Any]:
    """`guards`: '' or a JSON object of guard-rail changes (registry.canary.merge_guards judges the names)."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise click.BadParameter(f"{text!r} is not JSON: {err.msg}", param_hint="--guards") from None
    if not isinstance(value, dict):
        raise click.BadParameter(f"{text!r} is not a JSON object", param_hint="--guards")
    return value


def record_outcome(run_id: str, model: str, outcome: str, text: str) -> None:
    client = MlflowClient()
    client.set_tag(run_id, vocab.PROMOTION_MODEL, model)
    client.set_tag(run_id, vocab.PROMOTION_OUTCOME, outcome)
    client.set_tag(run_id, NOTE_TAG, text)


def record_result(run_id: str, result: PromotionResult) -> None:
    outcome = "forced" if result.forced else "promoted" if result.moved else "unchanged"
    if result.action == "rollback":
        outcome = "rolled back" if result.moved else "canary ended"
    lines = describe_result(result) + [f"warning: {w}" for w in result.warnings]
    record_outcome(run_id, result.model, outcome, "\n".join(lines))
    client = MlflowClient()
    client.set_tag(run_id, vocab.PROMOTION_ALIAS, result.alias)
    client.set_tag(run_id, vocab.PROMOTION_VERSION, str(result.version))


@click.command()
@click.option("--model", required=True, help="Registered model name.")
@click.option("--version", default="", help="Version to promote ('' = use --run-id).")
@click.option("--run-id", default="", help="Promote the version this run registered ('' = use --version).")
@click.option("--alias", default=DEFAULT_ALIAS, show_default=True, help="Alias to move.")
@click.option("--metric", default="", help=f"Metric that decides ('' = the model's {vocab.METRIC} tag).")
@click.option("--mode", default="", help="max or min ('' = tag, else inferred from the metric name).")
@click.option("--min", "min_text", default="", help="Refuse below this ('' = no bound).")
@click.option("--max", "max_text", default="", help="Refuse above this ('' = no bound).")
@click.option("--force", type=bool, default=False, show_default=True, help="Override failed gates (recorded).")
@click.option("--reason", default="", help="Why; stored with the move.")
@click.option("--significance", "significance_text", default="", help="Level for the significance gate ('' = off).")
@click.option("--canary", "canary_text", default="", help="Percent of the traffic for a canary of --version first.")
@click.option("--finish-canary", type=bool, default=False, show_default=True, help="Promote the running canary.")
@click.option("--guards", "guards_text", default="", help="Canary guard-rail changes as JSON ('' = keep).")
@reported
def main(
    model: str,
    version: str,
    run_id: str,
    alias: str,
    metric: str,
    mode: str,
    min_text: str,
    max_text: str,
    force: bool,
    reason: str,
    significance_text: str,
    canary_text: str,
    finish_canary: bool,
    guards_text: str,
) -> None:
    """Promote a version of MODEL to ALIAS behind the metric gates (see `kiln promote --help`)."""
    audit_run = os.environ.get("MLFLOW_RUN_ID")
    canary = optional_float(canary_text, "--canary")
    if canary is not None or finish_canary:
        gates = dict(metric=optional(metric), mode=optional(mode), min_value=optional_float(min_text, "--min"),
                     max_value=optional_float(max_text, "--max"), force=force)  # fmt: skip
        run_canary(model, optional(version), alias, canary, finish_canary, optional_guards(guards_text), reason,
                   gates, audit_run)  # fmt: skip
        return
    try:
        result = promote(
            model, version=optional(version), run_id=optional(run_id), alias=alias, metric=optional(metric),
            mode=optional(mode), min_value=optional_float(min_text, "--min"),
            max_value=optional_float(max_text, "--max"), force=force, reason=reason,
            significance=optional_float(significance_text, "--significance"),
        )  # fmt: skip
    except RegistryError as err:
        if audit_run:
            record_outcome(audit_run, model, "refused" if err.exit_code == 1 else "error", err.detail)
        raise
    if audit_run:
        record_result(audit_run, result)
    click.echo("\n".join(describe_result(result)))
    echo_warnings(result)


def run_canary(
    model: str,
    version: str | None,
    alias: str,
    percent: float | None,
    finish: bool,
    guards: dict[str, Any],
    reason: str,
    gates: dict[str, Any],
    audit_run: str | None,
) -> None:
    """Start, step or finish a canary (registry.canary_cli.canary_command, as `kiln promote --canary`)."""
    try:
        outcome = canary_command(model, version, alias, percent, finish, guards, reason, gates)
    except RegistryError as err:
        if audit_run:
            record_outcome(audit_run, model, "refused" if err.exit_code == 1 else "error", err.detail)
        raise
    lines = describe_canary(outcome)
    if audit_run:
        if outcome.promotion is not None:
            record_result(audit_run, outcome.promotion)
        else:
            record_outcome(audit_run, model, f"canary {outcome.action}", "\n".join(lines))
    click.echo("\n".join(lines))
    echo_warnings(outcome.promotion)


if __name__ == "__main__":
    main()
