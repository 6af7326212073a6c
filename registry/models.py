"""List registered models with the version behind each alias, the latest version, and their runs' key metrics.

    kiln models
    kiln models --metric val_iou --metric val_loss --json

Key metrics, unless named: the `kiln.metric` hint first (a version, source run or model tag), then the
run's `val_*`, `test_*` and `best_*` metrics; a run with none of those shows its other metrics, leaving
out system metrics and bookkeeping (lr, epoch, timings). At most `MAX_KEY_METRICS` are shown per version.
The latest version's metrics are listed too, alias or not, so that the first promotion can be decided from
`kiln models` alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mlflow import MlflowClient
from mlflow.entities.model_registry import RegisteredModel

from registry.gates import METRIC_HINT_TAG, choose_metric
from registry.history import MOVES, AliasEvent, parse_events
from registry.lookup import all_registered_models, get_version, latest_version, run_data, tags_of

MAX_KEY_METRICS = 6  # per version, so that one line per alias stays readable
KEY_PREFIXES = ("val_", "test_", "best_")
# Counters and checks, not measures of quality (older runs logged some of these as metrics).
BOOKKEEPING = {
    "lr", "epoch", "epoch_seconds", "samples_per_second", "step", "best_epoch", "best_iteration", "n_trees",
    "registered_version", "onnx_max_abs_diff", "fuse_max_abs_diff",
}  # fmt: skip
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
    latest_run_id: str | None = None  # the latest version's source run
    latest_metrics: dict[str, float] = field(default_factory=dict)  # its key metrics, whether or not it has an alias


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
    latest = latest_version(model)
    held = next((i for i in infos if i.version == latest), None)
    if held is not None:
        latest_run, latest_metrics = held.run_id, held.metrics
    elif latest is not None:
        latest_run, latest_metrics = _version_metrics(client, model, latest, wanted)
    else:
        latest_run, latest_metrics = None, {}
    name, description = str(model.name), str(model.description or "")
    return ModelSummary(name, description, latest, hint, infos, latest_run, latest_metrics)


def _ordered(aliases: dict[str, int]) -> list[str]:
    first = [a for a in ALIAS_ORDER if a in aliases]
    return first + sorted(a for a in aliases if a not in ALIAS_ORDER)


def _last_moves(events: list[AliasEvent]) -> dict[str, AliasEvent]:
    # events are oldest first, so the last one wins; a refused promotion did not move the alias
    return {event.alias: event for event in events if event.action in MOVES}


def _alias_info(
    client: MlflowClient,
    model: RegisteredModel,
    alias: str,
    version: int,
    wanted: Sequence[str],
    last_move: AliasEvent | None,
) -> AliasInfo:
    run_id, shown = _version_metrics(client, model, version, wanted)
    if last_move is None or last_move.version != version:
        return AliasInfo(alias, version, run_id, shown, None, None)  # the alias was set outside kiln
    return AliasInfo(alias, version, run_id, shown, last_move.at, last_move.by)


def _version_metrics(
    client: MlflowClient, model: RegisteredModel, version: int, wanted: Sequence[str]
) -> tuple[str | None, dict[str, float]]:
    """A version's source run and that run's key metrics (the `kiln.metric` hint of version, run or model first)."""
    found = get_version(client, str(model.name), version)
    tags = tags_of(found)
    run_id = str(found.run_id) if found.run_id else None
    metrics, run_tags = run_data(client, run_id)
    choice = choose_metric(None, None, [("version tag", tags), ("run tag", run_tags), ("model tag", tags_of(model))])
    return run_id, key_metrics(metrics, wanted, choice.metric if choice else None)


def key_metrics(metrics: dict[str, float], wanted: Sequence[str], hint: str | None) -> dict[str, float]:
    if wanted:
        return {name: metrics[name] for name in wanted if name in metrics}
    plain = {k: v for k, v in metrics.items() if not k.startswith("system/") and k not in BOOKKEEPING}
    keyed = sorted(k for k in plain if k.startswith(KEY_PREFIXES)) or sorted(plain)
    names = ([hint] if hint in plain else []) + [k for k in keyed if k != hint]
    return {name: plain[name] for name in names[:MAX_KEY_METRICS]}
