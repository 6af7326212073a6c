"""Promote a model version to an alias behind metric gates, or roll an alias back; every move is recorded.

    kiln promote edgnet --version 3 --metric val_iou --min 0.7
    python -c "from registry.promotion import promote; print(promote('edgnet', version=3, metric='val_iou'))"

A move sets the registry alias (stages are deprecated since MLflow 2.9), tags the version it now points to
(`promoted_at`, `promoted_by`, `previous_version`, `reason`, `promoted_alias`, `promotion_action`,
`forced`) and appends an event to the model's timeline (see `registry.history`). Metrics come from each
version's source run (`version.run_id`), latest value per metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion, RegisteredModel

from core import vocab
from registry.baseline import baseline_warning
from registry.canary import NoCanaryError, end_canary, read_canary
from registry.errors import (
    InvalidRequestError,
    MetricMissingError,
    MetricRequiredError,
    NothingToRollBackError,
    PromotionRefusedError,
    VersionNotFoundError,
)
from registry.gates import (
    METRIC_HINT_TAG,
    MODE_HINT_TAG,
    GateCheck,
    GateInput,
    MetricChoice,
    check_mode,
    choose_metric,
    infer_mode,
    run_gates,
)
from registry.history import AliasEvent, default_user, now_utc, parse_events, record_event, rollback_target
from registry.lookup import (
    alias_holder,
    check_alias,
    get_model,
    get_version,
    metric_hints,
    parse_version,
    run_metrics,
    tags_of,
    version_for_run,
)
from registry.significance import SignificanceOutcome, check_alpha, significance_gate

DEFAULT_ALIAS = vocab.DEFAULT_ALIAS
__all__ = ["DEFAULT_ALIAS", "PromotionResult", "default_user", "finish_canary", "history", "promote", "rollback"]


@dataclass(frozen=True)
class PromotionResult:
    """What a promotion or rollback did. `moved` is False when the version already held the alias."""

    model: str
    alias: str
    version: int
    previous_version: int | None  # the version that held the alias before; None when it was new
    moved: bool
    action: str  # "promote" or "rollback"
    forced: bool = False
    metric: MetricChoice | None = None  # None when no gate needed a metric
    value: float | None = None  # the new version's metric
    previous_value: float | None = None  # the previous version's metric
    checks: tuple[GateCheck, ...] = ()  # every gate that applied, passed or not
    event: AliasEvent | None = None  # the history entry written; None when nothing moved
    significance: dict[str, Any] | None = None  # the significance gate's numbers, when --significance was given
    warnings: tuple[str, ...] = ()  # what a front end shows beside a move that went through (a first promotion
    # no better than the family's trivial baseline)
    ended_canary: AliasEvent | None = None  # a rollback that ended the model's running canary: that event


@dataclass(frozen=True)
class _Move:
    """Everything `_move_alias` writes, gathered so the function signature stays short."""

    model: str
    alias: str
    action: str
    version: int
    previous: int | None
    by: str
    reason: str
    forced: bool = False
    overridden: tuple[str, ...] = ()
    metric: MetricChoice | None = None
    value: float | None = None
    previous_value: float | None = None
    significance: dict[str, Any] | None = None


def promote(
    model: str,
    *,
    version: int | str | None = None,
    run_id: str | None = None,
    alias: str = DEFAULT_ALIAS,
    metric: str | None = None,
    mode: str | None = None,
    min_value: float | None = None,
    max_value: float | None = None,
    force: bool = False,
    reason: str = "",
    by: str | None = None,
    significance: float | None = None,
    client: MlflowClient | None = None,
) -> PromotionResult:
    """Point `alias` of `model` at a version (given by number or by the run that registered it).

    Gates: the candidate's metric must be >= `min_value` and <= `max_value` when given, and not worse than
    the metric of the version holding the alias now. A failed gate raises `PromotionRefusedError` (HTTP 409)
    naming both numbers; `force=True` moves the alias anyway and records which gates it overrode.
    The metric is `metric`, else the version's or model's `kiln.metric` tag; with none, a promotion that
    needs a gate raises `MetricRequiredError`.

    `significance` (a level such as 0.05) adds the significance gate (`registry.significance`): with several
    draws of the metric on both sides it replaces the single-value "current" gate by a one-sided Welch t-test;
    without them it fails, saying why. Its decision, refused or not, goes into the timeline.
    """
    client = client or MlflowClient()
    alpha = check_alpha(significance) if significance is not None else None
    check_alias(alias)
    registered = get_model(client, model)
    candidate = _candidate(client, model, version, run_id)
    current = alias_holder(registered, alias)
    cand_version = int(candidate.version)
    if current == cand_version:
        return PromotionResult(model, alias, cand_version, current, moved=False, action="promote")
    choice = choose_metric(metric, mode, metric_hints(client, candidate, registered))
    _require_metric(choice, model, alias, cand_version, current, min_value, max_value, force)
    value, current_value, checks = _judge(client, registered, candidate, alias, current, choice, min_value, max_value)
    outcome = _significance(client, model, candidate, current, choice, alpha)
    checks = _with_significance(checks, outcome)
    stats = _significance_json(outcome)
    failed = tuple(c.detail for c in checks if not c.passed)
    if choice is not None and value is None and not force:
        missing = run_metrics(client, candidate.run_id)
        raise MetricMissingError(choice.metric, model, cand_version, str(candidate.run_id), list(missing))
    if failed and not force:
        detail = f"refused to promote {model} v{cand_version} to {alias}: {'; '.join(failed)}"
        if outcome is not None:  # the significance decision goes into the timeline, refused or not
            refused = _Move(model, alias, "refused", cand_version, current, by or default_user(), reason,
                            significance=stats)  # fmt: skip
            _record_refusal(client, _with_metric(refused, choice, value, current_value))
        raise PromotionRefusedError(f"{detail}. Use --force to override (the override is recorded)", checks)
    move = _Move(model, alias, "promote", cand_version, current, by or default_user(), reason, force, failed,
                 significance=stats)  # fmt: skip
    move = _with_metric(move, choice, value, current_value)
    event = _move_alias(client, move)
    return _result(move, event, checks, _warnings(client, move))


def _warnings(client: MlflowClient, move: _Move) -> tuple[str, ...]:
    """A first promotion has no holder to be judged against: warn when it is no better than its baseline."""
    if move.previous is not None:
        return ()
    metric = move.metric.metric if move.metric is not None else None
    warning = baseline_warning(client, move.model, move.version, metric=metric)
    return (warning,) if warning else ()


def _significance(
    client: MlflowClient,
    model: str,
    candidate: ModelVersion,
    current: int | None,
    choice: MetricChoice | None,
    alpha: float | None,
) -> SignificanceOutcome | None:
    """The significance gate's outcome, or None when it was not asked for or there is nothing to compare with."""
    if alpha is None or choice is None or current is None:
        return None
    try:
        holder_run = get_version(client, model, current).run_id
    except VersionNotFoundError:
        holder_run = None
    return significance_gate(
        client, metric=choice.metric, mode=choice.mode, alpha=alpha,
        candidate=(f"v{candidate.version}", candidate.run_id), holder=(f"v{current}", holder_run),
    )  # fmt: skip


def _with_significance(checks: tuple[GateCheck, ...], outcome: SignificanceOutcome | None) -> tuple[GateCheck, ...]:
    """Add the significance check; when it could judge, it supersedes the single-value "current" comparison."""
    if outcome is None:
        return checks
    kept = checks if outcome.verdict is None else tuple(c for c in checks if c.gate != "current")
    return (*kept, outcome.check)


def _significance_json(outcome: SignificanceOutcome | None) -> dict[str, Any] | None:
    if outcome is None:
        return None
    data: dict[str, Any] = outcome.verdict.to_json() if outcome.verdict is not None else {"judged": False}
    data.update(passed=outcome.check.passed, detail=outcome.check.detail)
    return data


def _record_refusal(client: MlflowClient, move: _Move) -> AliasEvent:
    at = now_utc()
    return record_event(client, _event(move, at), at)


def rollback(
    model: str,
    *,
    alias: str = DEFAULT_ALIAS,
    to_version: int | str | None = None,
    reason: str = "",
    by: str | None = None,
    client: MlflowClient | None = None,
) -> PromotionResult:
    """Move `alias` back to the version that held it before the current one (or to `to_version`).

    No gates run: a rollback is the way out of a bad promotion. Successive rollbacks walk further back
    through the timeline. Raises `NothingToRollBackError` (HTTP 409) when there is no earlier version.
    A canary running against `alias` is ended first (a "canary-rollback" event); without `to_version` that is
    all a rollback does (the alias stays where it is, `ended_canary` says what ended), with it the alias moves too.
    """
    client = client or MlflowClient()
    check_alias(alias)
    registered = get_model(client, model)
    if to_version is None:
        ended = _end_canary(client, model, alias, reason, by)
        if ended is not None:
            holder = alias_holder(registered, alias)
            version = holder if holder is not None else int(ended.previous_version or 0)
            return PromotionResult(model, alias, version, holder, moved=False, action="rollback", ended_canary=ended)
    current = alias_holder(registered, alias)
    target = _rollback_target(client, registered, alias, current, to_version)
    if target == current:
        raise NothingToRollBackError(f"v{target} already holds {alias} of {model}; nothing to roll back")
    ended = _end_canary(client, model, alias, reason, by) if to_version is not None else None  # target checked first
    choice = choose_metric(None, None, metric_hints(client, get_version(client, model, target), registered))
    value, current_value = _hint_values(client, model, choice, target, current)
    if not reason and current is not None:
        reason = f"rollback from v{current}"
    move = _Move(model, alias, "rollback", target, current, by or default_user(), reason)
    move = _with_metric(move, choice, value, current_value)
    result = _result(move, _move_alias(client, move), ())
    return result if ended is None else PromotionResult(**{**result.__dict__, "ended_canary": ended})


def _end_canary(client: MlflowClient, model: str, alias: str, reason: str, by: str | None) -> AliasEvent | None:
    """End the canary running against `alias` of `model`, if any; the rollback's reason goes with it."""
    running = read_canary(client, model)
    if running is None or running.alias != alias:
        return None
    why = reason or "ended by a rollback"
    return end_canary(model, outcome="rollback", reason=why, version=running.version, by=by, client=client)


def finish_canary(
    model: str,
    *,
    metric: str | None = None,
    mode: str | None = None,
    min_value: float | None = None,
    max_value: float | None = None,
    force: bool = False,
    reason: str = "",
    by: str | None = None,
    client: MlflowClient | None = None,
) -> PromotionResult:
    """Move the canary's alias to its candidate through the usual gates (`promote`), then end the canary.
    A refused gate raises PromotionRefusedError and leaves the canary running."""
    client = client or MlflowClient()
    running = read_canary(client, model)
    if running is None:
        raise NoCanaryError(f"no canary is running on {model}; nothing to finish")
    result = promote(
        model, version=running.version, alias=running.alias, metric=metric, mode=mode, min_value=min_value,
        max_value=max_value, force=force, reason=reason or f"canary of v{running.version} finished", by=by,
        client=client,
    )  # fmt: skip
    end_canary(model, outcome="finish", reason=result.event.reason if result.event else reason, by=by,
               numbers={"percent": running.percent}, version=running.version, client=client)  # fmt: skip
    return result


def history(model: str, *, alias: str | None = None, client: MlflowClient | None = None) -> list[AliasEvent]:
    """Every recorded move of `alias` (of every alias when None) of `model`, oldest first."""
    client = client or MlflowClient()
    if alias is not None:
        check_alias(alias)
    events = parse_events(model, tags_of(get_model(client, model)))
    return [e for e in events if alias is None or e.alias == alias]


def set_metric_hint(model: str, metric: str, mode: str | None = None, *, client: MlflowClient | None = None) -> None:
    """Tag `model` with the metric its promotions are judged by (`kiln.metric`, `kiln.mode`).

    The same tags on a version's source run (as training sets them) or on the version take precedence.
    """
    client = client or MlflowClient()
    get_model(client, model)
    client.set_registered_model_tag(model, METRIC_HINT_TAG, metric)
    client.set_registered_model_tag(model, MODE_HINT_TAG, check_mode(mode, vocab.MODE) if mode else infer_mode(metric))


def _candidate(client: MlflowClient, model: str, version: int | str | None, run_id: str | None) -> ModelVersion:
    if (version is None) == (not run_id):
        raise InvalidRequestError("give exactly one of --version or --run to name the candidate")
    if version is not None:
        found = get_version(client, model, parse_version(version))
    else:
        found = version_for_run(client, model, str(run_id))
    if found.status != "READY":
        raise InvalidRequestError(f"{model} v{found.version} is {found.status}, not READY; it cannot be promoted")
    return found


def _require_metric(
    choice: MetricChoice | None,
    model: str,
    alias: str,
    version: int,
    current: int | None,
    min_value: float | None,
    max_value: float | None,
    force: bool,
) -> None:
    if choice is not None:
        return
    how = f"pass --metric NAME, or tag the model {METRIC_HINT_TAG}=NAME"
    if min_value is not None or max_value is not None:
        raise MetricRequiredError(f"--min/--max need a metric to compare: {how}")
    if current is not None and not force:
        raise MetricRequiredError(
            f"{alias} of {model} is held by v{current}; judging v{version} against it needs a metric: "
            f"{how} (or --force to promote without gates)"
        )


def _judge(
    client: MlflowClient,
    registered: RegisteredModel,
    candidate: ModelVersion,
    alias: str,
    current: int | None,
    choice: MetricChoice | None,
    min_value: float | None,
    max_value: float | None,
) -> tuple[float | None, float | None, tuple[GateCheck, ...]]:
    if choice is None:
        return None, None, ()
    value = run_metrics(client, candidate.run_id).get(choice.metric)
    current_value = _version_metric(client, str(registered.name), current, choice.metric)
    inp = GateInput(
        str(registered.name), alias, int(candidate.version), choice.metric, choice.mode, value,
        min_value, max_value, current, current_value,
    )  # fmt: skip
    return value, current_value, run_gates(inp)


def _version_metric(client: MlflowClient, model: str, version: int | None, metric: str) -> float | None:
    if version is None:
        return None
    try:
        found = get_version(client, model, version)
    except VersionNotFoundError:
        return None  # the alias points at a deleted version; the gate then reports it cannot compare
    return run_metrics(client, found.run_id).get(metric)


def _hint_values(
    client: MlflowClient, model: str, choice: MetricChoice | None, target: int, current: int | None
) -> tuple[float | None, float | None]:
    if choice is None:
        return None, None
    return _version_metric(client, model, target, choice.metric), _version_metric(client, model, current, choice.metric)


def _rollback_target(
    client: MlflowClient, registered: RegisteredModel, alias: str, current: int | None, to_version: int | str | None
) -> int:
    model = str(registered.name)
    if to_version is not None:
        return int(get_version(client, model, parse_version(to_version)).version)
    target = rollback_target(parse_events(model, tags_of(registered)), alias, current)
    if target is None:
        raise NothingToRollBackError(
            f"no earlier version of {alias} is recorded for {model} (see `kiln history {model}`); "
            "pass --to VERSION to choose one"
        )
    try:
        get_version(client, model, target)
    except VersionNotFoundError:
        raise NothingToRollBackError(
            f"the previous {alias} of {model}, v{target}, has been deleted; pass --to VERSION to choose another"
        ) from None
    return target


def _with_metric(move: _Move, choice: MetricChoice | None, value: float | None, previous: float | None) -> _Move:
    return _Move(**{**move.__dict__, "metric": choice, "value": value, "previous_value": previous})


def _move_alias(client: MlflowClient, move: _Move) -> AliasEvent:
    """Set the alias, tag the version, append the history event, in that order: the alias is the truth."""
    at = now_utc()
    event = _event(move, at)
    client.set_registered_model_alias(move.model, move.alias, str(move.version))
    for key, value in _version_tags(event).items():
        client.set_model_version_tag(move.model, str(move.version), key, value)
    return record_event(client, event, at)


def _event(move: _Move, at: datetime) -> AliasEvent:
    return AliasEvent(
        model=move.model, alias=move.alias, action=move.action, version=move.version,
        previous_version=move.previous, at=at.isoformat(timespec="milliseconds"), by=move.by, reason=move.reason,
        forced=move.forced, overridden=move.overridden, metric=move.metric.metric if move.metric else None,
        mode=move.metric.mode if move.metric else None, value=move.value, previous_value=move.previous_value,
        significance=move.significance,
    )  # fmt: skip


def _version_tags(event: AliasEvent) -> dict[str, str]:
    tags = {
        "promoted_at": event.at,
        "promoted_by": event.by,
        "previous_version": str(event.previous_version) if event.previous_version is not None else "none",
        "reason": event.reason,
        "promoted_alias": event.alias,
        "promotion_action": event.action,
        "forced": str(event.forced).lower(),
    }
    if event.overridden:
        tags["forced_over"] = "; ".join(event.overridden)
    if event.significance is not None:
        tags["significance"] = str(event.significance.get("detail", ""))[:5000]
    return tags


def _result(
    move: _Move, event: AliasEvent, checks: tuple[GateCheck, ...], warnings: tuple[str, ...] = ()
) -> PromotionResult:
    return PromotionResult(
        move.model, move.alias, move.version, move.previous, True, move.action, move.forced, move.metric,
        move.value, move.previous_value, checks, event, move.significance, warnings,
    )  # fmt: skip
