"""List registered models with the version behind each alias and the key metrics of its source run.

    kiln models
    kiln models --metric val_iou --metric val_loss --json

Key metrics, unless named: the `kiln.metric` hint first (a version, source run or model tag), then the
run's `val_*`, `test_*` and `best_*` metrics; a run with none of those shows its other metrics, leaving
out system metrics and bookkeeping (lr, epoch, timings). At most `MAX_KEY_METRICS` are shown per version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities.model_registry import RegisteredModel

from registry.gates import METRIC_HINT_TAG, choose_metric
from registry.history import AliasEvent, parse_events
from registry.lookup import all_registered_models, get_version, latest_version, run_data, tags_of

MAX_KEY_METRICS = 6  # per version, so that one line per alias stays readable
KEY_PREFIXES = ("val_", "test_", "best_")
BOOKKEEPING = {"lr", "epoch", "epoch_seconds", "samples_per_second", "step"}
ALIAS_ORDER = ("production", "staging", "challenger")  # shown first, in this order; others follow by name


@dataclass(frozen=True)
class AliasInfo:
    alias: str
    version: int
    run_id: str | None  # the version's source run; None for a version registered without one
    metrics: dict[str, float]  # key metrics of that run, latest values
    promoted_at: str | None  # when kiln last moved this alias (from the history); None if moved outside kiln
    promoted_by: str | None


@dataclass(frozen=True)
class ModelSummary:
    name: str
    description: str
    latest_version: int | None
    metric_hint: str | None  # the model's `kiln.metric` tag
    aliases: tuple[AliasInfo, ...]


def list_models(*, metrics: Sequence[str] = (), client: MlflowClient | None = None) -> list[ModelSummary]:
    """Every registered model, sorted by name; `metrics` names the metrics to show instead of the key ones."""
    client = client or MlflowClient()
    found = all_registered_models(client)
    return [_summarise(client, m, metrics) for m in sorted(found, key=lambda m: str(m.name))]


def _summarise(client: MlflowClient, model: RegisteredModel, wanted: Sequence[str]) -> ModelSummary:
    model_tags = tags_of(model)
    aliases = {str(k): int(v) for k, v in (model.aliases or {}).items()}
    moves = _last_moves(parse_events(str(model.name), model_tags))
    infos = tuple(_alias_info(client, model, a, aliases[a], wanted, moves.get(a)) for a in _ordered(aliases))
    hint = model_tags.get(METRIC_HINT_TAG)
    return ModelSummary(str(model.name), str(model.description or ""), latest_version(model), hint, infos)


def _ordered(aliases: dict[str, int]) -> list[str]:
    first = [a for a in ALIAS_ORDER if a in aliases]
    return first + sorted(a for a in aliases if a not in ALIAS_ORDER)


def _last_moves(events: list[AliasEvent]) -> dict[str, AliasEvent]:
    return {event.alias: event for event in events}  # events are oldest first, so the last one wins


def _alias_info(
    client: MlflowClient,
    model: RegisteredModel,
    alias: str,
    version: int,
    wanted: Sequence[str],
    last_move: AliasEvent | None,
) -> AliasInfo:
    found = get_version(client, str(model.name), version)
    tags = tags_of(found)
    run_id = str(found.run_id) if found.run_id else None
    metrics, run_tags = run_data(client, run_id)
    choice = choose_metric(None, None, [("version tag", tags), ("run tag", run_tags), ("model tag", tags_of(model))])
    shown = key_metrics(metrics, wanted, choice.metric if choice else None)
    if last_move is None or last_move.version != version:
        return AliasInfo(alias, version, run_id, shown, None, None)  # the alias was set outside kiln
    return AliasInfo(alias, version, run_id, shown, last_move.at, last_move.by)


def key_metrics(metrics: dict[str, float], wanted: Sequence[str], hint: str | None) -> dict[str, float]:
    if wanted:
        return {name: metrics[name] for name in wanted if name in metrics}
    plain = {k: v for k, v in metrics.items() if not k.startswith("system/") and k not in BOOKKEEPING}
    keyed = sorted(k for k in plain if k.startswith(KEY_PREFIXES)) or sorted(plain)
    names = ([hint] if hint in plain else []) + [k for k in keyed if k != hint]
    return {name: plain[name] for name in names[:MAX_KEY_METRICS]}
