"""The alias timeline of a registered model: one registered-model tag per alias move, read back in order.

    kiln history edgnet --alias production

Why one tag per event, on the registered model:
- It lives in the registry itself, so it travels with the model (same store, same permissions, visible in
  the MLflow UI on the model's page) and needs no second database.
- A tag per event is append-only: two promotions at once each write their own key, so neither can drop
  the other's entry, as a read-modify-write of one JSON list could. There is no size ceiling either
  (MLflow caps one tag value at 100,000 characters, a few hundred events in a list).
- Version tags (`promoted_at`, ...) say only how a version last moved and vanish when the version is
  deleted; the model's tags keep the whole timeline.

Keys are `kiln.history.<UTC time to the microsecond>.<4 hex>`, so they sort by time; values are JSON.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient

from core import vocab
from registry.errors import RegistryError

HISTORY_TAG_PREFIX = vocab.HISTORY_PREFIX
CANARY_ACTIONS = ("canary-start", "canary-step", "canary-rollback", "canary-finish")  # see registry/canary.py
ACTIONS = ("promote", "rollback", "refused", *CANARY_ACTIONS)
MOVES = ("promote", "rollback")  # the actions that moved the alias; "refused" records a gate's decision only


@dataclass(frozen=True)
class AliasEvent:
    """One move of an alias: who moved it where, from where, why, and what the gates saw."""

    model: str
    alias: str
    action: str  # "promote" or "rollback"; "refused" when a significance gate kept the alias where it was
    version: int  # the version the alias points to after the move (for "refused": the refused candidate)
    previous_version: int | None  # the version it pointed to before; None when the alias was new
    at: str  # ISO-8601 UTC time of the move
    by: str  # who moved it (KILN_USER, else the login name)
    reason: str = ""
    forced: bool = False  # --force was given
    overridden: tuple[str, ...] = ()  # the failed gates that --force overrode, one sentence each
    metric: str | None = None  # the metric the move was judged by, if any
    mode: str | None = None  # "max" or "min"
    value: float | None = None  # the new version's metric
    previous_value: float | None = None  # the previous version's metric
    significance: dict[str, Any] | None = None  # the significance gate's numbers and sentence, when it ran
    canary: dict[str, Any] | None = None  # a canary event's split, guard rails and the numbers that ended it
    key: str = field(default="", compare=False)  # the registered-model tag holding this event

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["overridden"] = list(self.overridden)
        return data


def now_utc() -> datetime:
    return datetime.now(UTC)


def event_key(at: datetime) -> str:
    return f"{HISTORY_TAG_PREFIX}{at:%Y%m%dT%H%M%S%fZ}.{secrets.token_hex(2)}"


def record_event(client: MlflowClient, event: AliasEvent, at: datetime) -> AliasEvent:
    """Append `event` to the model's timeline and return it with its tag key filled in."""
    key = event_key(at)
    payload = {k: v for k, v in event.to_json().items() if k not in ("model", "key")}
    client.set_registered_model_tag(event.model, key, json.dumps(payload, sort_keys=True))
    refresh_description(client, event.model)
    return AliasEvent(**{**event.__dict__, "key": key})


# The registered model's description (MLflow renders it as Markdown on the model's page) ends with the timeline
# as readable lines, newest first; the text above the heading (training's model card) is kept as it is.
HISTORY_HEADING = "### Promotion history"
HISTORY_LINES = 15  # newest events shown; `kiln history` has them all
DESCRIPTION_LIMIT = 5000  # MLflow's registered_models.description column (enforced by PostgreSQL and MySQL)


def split_description(description: str | None) -> tuple[str, str]:
    """(the text above the history heading, the history section) of a model description."""
    text = description or ""
    at = text.find(HISTORY_HEADING)
    return (text, "") if at < 0 else (text[:at].rstrip(), text[at:])


def event_line(event: AliasEvent) -> str:
    """One readable line: `2025-06-01 12:00 UTC: promote production -> v3 (was v2) by ana, best_val_iou 0.81
    (was 0.78), "new data"`."""
    when = event.at[:16].replace("T", " ") + " UTC"
    if event.action == "refused":
        kept = f" (kept v{event.previous_version})" if event.previous_version is not None else ""
        head = f"refused v{event.version} for {event.alias}{kept}"
    else:
        was = f" (was v{event.previous_version})" if event.previous_version is not None else ""
        head = f"{event.action} {event.alias} -> v{event.version}{was}"
    parts = [f"{when}: {head} by {event.by}"]
    if event.metric and event.value is not None:
        before = f" (was {event.previous_value:.4g})" if event.previous_value is not None else ""
        parts.append(f"{event.metric} {event.value:.4g}{before}")
    if event.forced:
        parts.append("forced")
    if event.reason:
        parts.append(f'"{event.reason[:120]}"')
    return ", ".join(parts)


def history_section(model: str, events: Sequence[AliasEvent]) -> str:
    """The Markdown history section: the newest `HISTORY_LINES` events, newest first."""
    shown = list(reversed(events))[:HISTORY_LINES]
    lines = [f"- {event_line(e)}" for e in shown]
    if len(events) > len(shown):
        lines.append(f"- ... {len(events) - len(shown)} earlier events: `kiln history {model}`")
    return "\n".join([HISTORY_HEADING, "", *lines])


def with_history(description: str | None, section: str) -> str:
    """`description` with its history section replaced by `section`, cut to MLflow's length limit."""
    card = split_description(description)[0]
    text = f"{card}\n\n{section}" if card else section
    return text if len(text) <= DESCRIPTION_LIMIT else text[: DESCRIPTION_LIMIT - 4] + "\n..."


def refresh_description(client: MlflowClient, model: str) -> None:
    """Rewrite the history section of `model`'s description from its timeline tags (after each move)."""
    registered = client.get_registered_model(model)
    events = parse_events(model, registered.tags or {})
    updated = with_history(registered.description, history_section(model, events))
    if updated != (registered.description or ""):
        client.update_registered_model(model, description=updated)


def parse_events(model: str, tags: Mapping[str, str]) -> list[AliasEvent]:
    """All events stored in a registered model's tags, oldest first."""
    keys = sorted(k for k in tags if k.startswith(HISTORY_TAG_PREFIX))
    return [_parse_event(model, key, tags[key]) for key in keys]


def _parse_event(model: str, key: str, text: str) -> AliasEvent:
    try:
        data = json.loads(text)
        data["overridden"] = tuple(data.get("overridden", ()))
        event = AliasEvent(model=model, key=key, **data)
    except (json.JSONDecodeError, TypeError) as err:
        raise RegistryError(f"history tag {key!r} on model {model!r} is not a kiln history event: {err}") from err
    if event.action not in ACTIONS:
        raise RegistryError(f"history tag {key!r} on model {model!r} has unknown action {event.action!r}")
    return event


def alias_stack(events: Sequence[AliasEvent], alias: str) -> list[int]:
    """The versions that have held `alias`, as a stack: a promotion pushes, a rollback returns to a version.

    A rollback to a version on the stack drops everything above it, so successive rollbacks walk back
    through earlier promotions instead of flipping between the last two versions.
    """
    stack: list[int] = []
    for event in events:
        if event.alias != alias or event.action not in MOVES:
            continue
        if event.action == "rollback" and event.version in stack:
            del stack[_last_index(stack, event.version) + 1 :]
        else:
            stack.append(event.version)
    return stack


def _last_index(items: list[int], value: int) -> int:
    return len(items) - 1 - items[::-1].index(value)


def rollback_target(events: Sequence[AliasEvent], alias: str, current: int | None) -> int | None:
    """The version `alias` held before its current one, or None when the timeline has none.

    When the alias was moved outside kiln (the MLflow UI), the current version is not on top of the stack;
    the version kiln last put there is then the one to go back to.
    """
    stack = alias_stack(events, alias)
    if not stack:
        return None
    if stack[-1] != current:
        return stack[-1]
    return stack[-2] if len(stack) >= 2 else None


def default_user() -> str:
    """Who to record as `promoted_by`: $KILN_USER (set it in CI or a web service), else the login name."""
    user = os.environ.get("KILN_USER")
    if user:
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
