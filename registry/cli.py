"""`kiln promote`, `kiln rollback`, `kiln history` and `kiln models`: the registry from the command line.

    kiln promote edgnet --version 3 --metric val_iou --mode max --min 0.7 --reason "new data"
    kiln promote edgnet --run 9f1c... --alias staging
    kiln rollback edgnet
    kiln history edgnet --alias production
    kiln models

Exit codes: 0 done (or nothing to do), 1 refused (a gate failed, nothing to roll back) or an MLflow
failure, 2 bad input (unknown model, version or run, a missing metric, contradictory flags).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click

from core import vocab
from registry.canary_cli import canary_columns, canary_command, canary_options, describe_canary
from registry.errors import RegistryError
from registry.gates import better_word, fmt

if TYPE_CHECKING:  # mlflow (seconds to import) loads when a command runs, not for `kiln promote --help`
    from registry.history import AliasEvent
    from registry.models import ModelSummary
    from registry.promotion import PromotionResult

DEFAULT_ALIAS = vocab.DEFAULT_ALIAS

P = ParamSpec("P")
R = TypeVar("R")


class CommandFailed(click.ClickException):
    """A refused request or an MLflow failure: one line on stderr, exit code 1."""

    exit_code = 1


class BadInput(click.ClickException):
    """An unknown model, version, run or metric, or contradictory flags: exit code 2, as click's usage errors."""

    exit_code = 2


def reported(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn registry and MLflow errors into a message and an exit code instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except RegistryError as err:
            raise (BadInput if err.exit_code == 2 else CommandFailed)(err.detail) from None
        except MlflowException as err:
            raise CommandFailed(f"MLflow: {err.message}") from None

    return wrapper


def to_json(value: Any) -> str:
    data = [dataclasses.asdict(v) for v in value] if isinstance(value, list) else dataclasses.asdict(value)
    return json.dumps(data, indent=2, sort_keys=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)) for row in [headers, *rows]]
    return "\n".join(line.rstrip() for line in lines)


def describe_result(result: PromotionResult) -> list[str]:
    was = f"v{result.previous_version}" if result.previous_version is not None else "no version"
    ended = result.ended_canary
    if ended is not None and not result.moved:
        return [f"ended the canary of {result.model} v{ended.version}; {result.alias} stays on v{result.version}"]
    if not result.moved:
        return [f"{result.model} v{result.version} already holds {result.alias}; nothing to do"]
    verb = "rolled back" if result.action == "rollback" else "promoted"
    forced = " (FORCED)" if result.forced else ""
    lines = [f"{verb} {result.model} {result.alias}: {was} -> v{result.version}{forced}"]
    if result.metric is not None:
        choice = result.metric
        lines.append(f"  metric: {choice.metric} ({better_word(choice.mode)}; from {choice.source})")
    lines += [f"  {'ok  ' if c.passed else 'FAIL'} {c.gate}: {c.detail}" for c in result.checks]
    if result.forced and result.event is not None and result.event.overridden:
        lines.append(f"  override recorded: {len(result.event.overridden)} failed gate(s) in {result.event.key}")
    if ended is not None:
        lines.append(f"  ended the canary of v{ended.version} first")
    return lines


def echo_warnings(result: PromotionResult | None) -> None:
    """The registry's warnings about a move that went through, on stderr (stdout may be --json)."""
    for warning in result.warnings if result is not None else ():
        click.echo(f"warning: {warning}", err=True)


@click.command("promote")
@click.argument("model")
@click.option("--version", "version", help="Version number to promote.")
@click.option("--run", "run_id", help="Promote the version this run registered (instead of --version).")
@click.option("--alias", default=DEFAULT_ALIAS, show_default=True, help="Alias to move: production, staging, ...")
@click.option("--metric", help="Metric that decides [default: the model's kiln.metric tag].")
@click.option("--mode", type=click.Choice(["max", "min"]), help="Better direction [default: tag, else by name].")
@click.option("--min", "min_value", type=float, help="Refuse when the metric is below this.")
@click.option("--max", "max_value", type=float, help="Refuse when the metric is above this.")
@click.option("--force", is_flag=True, help="Move the alias even when a gate fails; the override is recorded.")
@click.option("--reason", default="", help="Why; stored with the move.")
@click.option(
    "--significance",
    type=float,
    help="Refuse unless the improvement is significant at this level (e.g. 0.05): a one-sided Welch t-test over "
    "the kiln cv folds or seeds, or the repeated runs, of both versions.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@canary_options
@reported
def promote_command(
    model: str,
    version: str | None,
    run_id: str | None,
    alias: str,
    metric: str | None,
    mode: str | None,
    min_value: float | None,
    max_value: float | None,
    force: bool,
    reason: str,
    significance: float | None,
    as_json: bool,
    canary: float | None,
    finish_canary: bool,
    guards: dict[str, Any],
) -> None:
    """Point ALIAS of MODEL at a version, if it is not worse than the version holding ALIAS now.

    With --canary PERCENT the version first answers that share of the traffic (sticky per routing key) while
    ALIAS keeps the rest; servers end it by themselves when a guard rail fails. --finish-canary promotes it."""
    from registry.promotion import promote

    if canary is not None or finish_canary:
        outcome = canary_command(
            model,
            version,
            alias,
            canary,
            finish_canary,
            guards,
            reason,
            dict(metric=metric, mode=mode, min_value=min_value, max_value=max_value, force=force),
        )
        click.echo(to_json(outcome) if as_json else "\n".join(describe_canary(outcome)))
        echo_warnings(outcome.promotion)
        return
    result = promote(
        model, version=version, run_id=run_id, alias=alias, metric=metric, mode=mode,
        min_value=min_value, max_value=max_value, force=force, reason=reason, significance=significance,
    )  # fmt: skip
    click.echo(to_json(result) if as_json else "\n".join(describe_result(result)))
    echo_warnings(result)


@click.command("rollback")
@click.argument("model")
@click.option("--alias", default=DEFAULT_ALIAS, show_default=True, help="Alias to move back.")
@click.option("--to", "to_version", help="Version to go back to [default: the one before the current].")
@click.option("--reason", default="", help="Why; stored with the move.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@reported
def rollback_command(model: str, alias: str, to_version: str | None, reason: str, as_json: bool) -> None:
    """Move ALIAS of MODEL back to the version that held it before (no gates); recorded like a promotion.
    While a canary runs on MODEL, end the canary instead (ALIAS stays where it is; with --to it moves too)."""
    from registry.promotion import rollback

    result = rollback(model, alias=alias, to_version=to_version, reason=reason)
    click.echo(to_json(result) if as_json else "\n".join(describe_result(result)))


def describe_event(event: AliasEvent) -> list[str]:
    was = f"v{event.previous_version}" if event.previous_version is not None else "-"
    action = f"{event.action} (forced)" if event.forced else event.action
    if event.significance is not None:
        p_value = event.significance.get("p_value")
        action += f" p={p_value:.3g}" if isinstance(p_value, float) else " (no stats)"
    judged = ""
    if event.metric is not None and event.value is not None:
        before = f" (was {fmt(event.previous_value)})" if event.previous_value is not None else ""
        judged = f"{event.metric}={fmt(event.value)}{before}"
    when = event.at.replace("T", " ")[:19]
    if event.canary is not None:
        action, judged = canary_columns(event)
    return [when, event.alias, action, f"{was} -> v{event.version}", event.by, judged, event.reason]


@click.command("history")
@click.argument("model")
@click.option("--alias", help="Only this alias [default: every alias].")
@click.option("--json", "as_json", is_flag=True, help="Print the events as JSON.")
@reported
def history_command(model: str, alias: str | None, as_json: bool) -> None:
    """Print the timeline of MODEL's aliases, oldest first, and where each alias points now."""
    from mlflow import MlflowClient

    from registry.lookup import get_model
    from registry.promotion import history

    events = history(model, alias=alias)
    if as_json:
        click.echo(to_json(events))
        return
    headers = ["WHEN (UTC)", "ALIAS", "ACTION", "MOVE", "BY", "METRIC", "REASON"]
    click.echo(
        table(headers, [describe_event(e) for e in events]) if events else f"no alias moves recorded for {model}"
    )
    aliases = {str(k): int(v) for k, v in get_model(MlflowClient(), model).aliases.items()}
    shown = {a: v for a, v in aliases.items() if alias is None or a == alias}
    click.echo("now: " + (", ".join(f"{a} -> v{v}" for a, v in sorted(shown.items())) or "no alias set"))


def describe_model(summary: ModelSummary) -> list[list[str]]:
    """One row per alias, and one for the latest version when no alias holds it (its metrics decide a promotion)."""
    latest = f"v{summary.latest_version}" if summary.latest_version is not None else "-"
    rows = []
    for info in summary.aliases:
        promoted = f"{(info.promoted_at or '')[:16].replace('T', ' ')} {info.promoted_by or ''}".strip() or "-"
        rows.append([summary.name, latest, info.alias, f"v{info.version}", promoted, _metrics_text(info.metrics)])
    if summary.latest_version is not None and all(i.version != summary.latest_version for i in summary.aliases):
        rows.append([summary.name, latest, "-", latest, "-", _metrics_text(summary.latest_metrics)])
    return rows or [[summary.name, latest, "-", "-", "-", ""]]


def _metrics_text(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={fmt(v)}" for k, v in metrics.items())


@click.command("models")
@click.option("--metric", "metrics", multiple=True, help="Show these metrics (repeatable) [default: key metrics].")
@click.option("--json", "as_json", is_flag=True, help="Print the models as JSON.")
@reported
def models_command(metrics: tuple[str, ...], as_json: bool) -> None:
    """List registered models, the version behind each alias, and its source run's key metrics."""
    from registry.models import list_models

    summaries = list_models(metrics=metrics)
    if as_json:
        click.echo(to_json(summaries))
        return
    if not summaries:
        click.echo("no registered models")
        return
    rows = [row for s in summaries for row in describe_model(s)]
    click.echo(table(["MODEL", "LATEST", "ALIAS", "VERSION", "PROMOTED (UTC)", "METRICS"], rows))
