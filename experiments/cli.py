"""`kiln tune`, `kiln cv` and `kiln advise`: experiments over any registered family from the command line.

    kiln advise 3f2a... --json
    kiln tune skinmodel --space space.yaml --trials 20 --pruner median
    kiln cv skinmodel --folds 5

Each command reads the tracking store from MLFLOW_TRACKING_URI (or --tracking-uri). Errors are one line
(`Error: ...`) with exit code 1 for a refused request and 2 for bad input; never a traceback.
"""

from __future__ import annotations

import json

import click
import mlflow

from core.errors import cli_errors


def _use_store(tracking_uri: str | None) -> None:
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)


@click.command("advise")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--no-log", is_flag=True, help="Do not write advice.md and the kiln.advice tag to the run.")
@click.option("--no-compare", is_flag=True, help="Skip the comparison with the other runs of the experiment.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="Tracking store [default: MLFLOW_TRACKING_URI].")
@cli_errors
def advise_command(run_id: str, as_json: bool, no_log: bool, no_compare: bool, tracking_uri: str | None) -> None:
    """Read RUN_ID's curves, params and system metrics; say what happened and what to try next."""
    from experiments.advise import advise, log_advice

    _use_store(tracking_uri)
    advice = advise(run_id, compare=not no_compare)
    if not no_log:
        log_advice(advice)
    click.echo(json.dumps(advice.to_json(), indent=2) if as_json else advice.markdown())
