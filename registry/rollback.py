"""The `rollback` MLproject entry point: `kiln rollback` that leaves a run behind as its audit record.

    mlflow run . -e rollback --env-manager local -P model=edgnet -P reason="drift on site B"
    python -m registry.rollback --model edgnet --to 3

A running canary is ended first (registry.promotion.rollback decides that, as for `kiln rollback` and the jobs
API); `to` ('' = the version before the current one) moves the alias. Under `mlflow run` the outcome is written
to the run `mlflow run` created (tags `kiln.promotion.*` and a note), and a refused rollback fails that run.
"""

from __future__ import annotations

import os

import click

from registry.cli import describe_result, reported
from registry.errors import RegistryError
from registry.promote import optional, record_outcome, record_result
from registry.promotion import DEFAULT_ALIAS, rollback


@click.command()
@click.option("--model", required=True, help="Registered model name.")
@click.option("--alias", default=DEFAULT_ALIAS, show_default=True, help="Alias to move back.")
@click.option("--to", "to_version", default="", help="Version to go back to ('' = the one before the current).")
@click.option("--reason", default="", help="Why; stored with the move.")
@reported
def main(model: str, alias: str, to_version: str, reason: str) -> None:
    """Move ALIAS of MODEL back (no gates), or end its running canary (see `kiln rollback --help`)."""
    audit_run = os.environ.get("MLFLOW_RUN_ID")
    try:
        result = rollback(model, alias=alias, to_version=optional(to_version), reason=reason)
    except RegistryError as err:
        if audit_run:
            record_outcome(audit_run, model, "refused" if err.exit_code == 1 else "error", err.detail)
        raise
    if audit_run:
        record_result(audit_run, result)
    click.echo("\n".join(describe_result(result)))


if __name__ == "__main__":
    main()
