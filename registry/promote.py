"""The `promote` MLproject entry point: a gated alias move that leaves a run behind as its audit record.

    mlflow run . -e promote --env-manager local -P model=edgnet -P version=3 -P metric=val_iou -P min=0.7
    mlflow run . -e promote --env-manager local -P model=edgnet -P version=5 -P significance=0.05
    python -m registry.promote --model edgnet --version 3 --metric val_iou --min 0.7

MLproject parameters cannot be absent, so an empty string means "not given" for every optional flag, and
`--force` takes a value (true/false). Under `mlflow run` the outcome is also written to the run that
`mlflow run` created: tags `kiln.promotion.*` and a note, and a refused promotion fails that run.
"""

from __future__ import annotations

import os

import click
from mlflow import MlflowClient

from core import vocab
from registry.cli import describe_result, reported
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


def record_outcome(run_id: str, model: str, outcome: str, text: str) -> None:
    client = MlflowClient()
    client.set_tag(run_id, vocab.PROMOTION_MODEL, model)
    client.set_tag(run_id, vocab.PROMOTION_OUTCOME, outcome)
    client.set_tag(run_id, NOTE_TAG, text)


def record_result(run_id: str, result: PromotionResult) -> None:
    outcome = "forced" if result.forced else "promoted" if result.moved else "unchanged"
    record_outcome(run_id, result.model, outcome, "\n".join(describe_result(result)))
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
) -> None:
    """Promote a version of MODEL to ALIAS behind the metric gates (see `kiln promote --help`)."""
    audit_run = os.environ.get("MLFLOW_RUN_ID")
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


if __name__ == "__main__":
    main()
