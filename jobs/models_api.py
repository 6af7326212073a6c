"""Registry routes of the job service: registered models, their production version, gated promotion, rollback.

    curl -s localhost:9000/api/models
    curl -s -X POST localhost:9000/api/models/edgnet/promote -H 'Content-Type: application/json' \\
         -d '{"version": 3, "metric": "val_iou", "min_value": 0.7, "reason": "beats v2 on the new drawings"}'

Promotion goes through `registry.promotion.promote`, the same gated move as `kiln promote`: a refused gate
is a 409 whose `detail` names the metric and both numbers, and `checks` lists every gate's verdict. Every
policy (gates, warnings, guard-rail defaults and merge, a rollback ending a canary) is registry/'s: these routes
parse the body and return what the registry returns.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal
from urllib.parse import quote as quote_path

from fastapi import APIRouter, Path, Request
from mlflow import MlflowClient
from pydantic import BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema

from registry.canary import NoCanaryError, end_canary, read_canary, start_canary
from registry.lookup import get_model, run_metrics
from registry.models import key_metrics, list_models
from registry.names import NAME_PATTERN
from registry.promotion import DEFAULT_ALIAS, finish_canary, history, promote, rollback

MAX_VERSIONS = 30  # newest versions listed per model, for the promote menu
MAX_EVENTS = 10  # newest history events shown per model


# What the registry checks that a JSON schema can say, declared in the OpenAPI document (so a client, or a fuzzer
# keeping to the document, knows it) while registry/ stays the one place that enforces it, with its own 400 naming
# the value: the alias and model name rule of registry/names.py, a version as registry.lookup.parse_version reads
# it (1, "3" or "v3"), a run id MLflow accepts, and the significance level registry.significance.check_alpha
# takes. MLflow's reserved words (`latest`, `v<N>`) for an alias are not in the pattern (a JSON schema pattern
# cannot say "not these" portably); registry.names refuses them with a 400.
def _documented(schema: dict[str, Any]) -> WithJsonSchema:
    return WithJsonSchema({"anyOf": [schema, {"type": "null"}]})


NAME = {"type": "string", "pattern": f"^{NAME_PATTERN}$"}
Alias = Annotated[str, WithJsonSchema(NAME)]
ModelName = Annotated[str, Path(json_schema_extra={"pattern": f"^{NAME_PATTERN}$"})]
Version = Annotated[int | str | None, _documented({"anyOf": [
    {"type": "integer", "minimum": 1}, {"type": "string", "pattern": "^v?[0-9]*[1-9][0-9]*$"}]})]  # fmt: skip
RunId = Annotated[str | None, _documented({"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,255}$"})]
Significance = Annotated[float | None, _documented({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.5})]
Mode = Literal["max", "min"] | None


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Version = None  # the candidate, by number ...
    run_id: RunId = None  # ... or by the run that registered it
    alias: Alias = DEFAULT_ALIAS
    metric: str | None = None  # None: the model's kiln.metric tag
    mode: Mode = None  # None: the tag, else inferred from the metric name
    min_value: float | None = None
    max_value: float | None = None
    force: StrictBool = False  # JSON true/false only: pydantic's lax mode would read 0 and "no" as false
    reason: str = ""
    by: str | None = Field(default=None, max_length=200)  # recorded as promoted_by; None: KILN_USER or login
    significance: Significance = None  # e.g. 0.05: refuse an improvement within the folds'/seeds' noise


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: Alias = DEFAULT_ALIAS
    to_version: Version = None  # None: the version that held the alias before the current one
    reason: str = ""
    by: str | None = Field(default=None, max_length=200)


class CanaryRequest(BaseModel):
    """Start a canary (`version` given) or change the running one's percent (`version` omitted)."""

    model_config = ConfigDict(extra="forbid")

    version: Version = None
    percent: float = Field(gt=0, lt=100)
    alias: Alias = DEFAULT_ALIAS
    guards: dict[str, float] = Field(default_factory=dict)  # GuardRails fields to change (registry.canary.merge_guards)
    reason: str = ""
    by: str | None = Field(default=None, max_length=200)


class FinishCanaryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str | None = None
    mode: Mode = None
    min_value: float | None = None
    max_value: float | None = None
    force: StrictBool = False
    reason: str = ""
    by: str | None = Field(default=None, max_length=200)


def _client(request: Request) -> MlflowClient:
    return MlflowClient(request.app.state.settings.tracking_uri)


def _ui(request: Request) -> str:
    return str(request.app.state.settings.mlflow_ui_url)


def _versions(client: MlflowClient, summary: Any, ui_url: str) -> list[dict[str, Any]]:
    """The newest versions with their aliases and key metrics.

    MLflow's `search_model_versions` leaves `aliases` empty on every version, so they come from the registered
    model's own alias map (which `list_models` already read).
    """
    name = summary.name
    quote = '"' if "'" in name else "'"
    found = client.search_model_versions(f"name = {quote}{name}{quote}", max_results=200)
    newest = sorted(found, key=lambda v: int(v.version), reverse=True)[:MAX_VERSIONS]
    held: dict[int, list[str]] = {}
    for info in summary.aliases:
        held.setdefault(info.version, []).append(info.alias)
    return [
        {
            "version": int(v.version),
            "run_id": v.run_id,
            "status": v.status,
            "aliases": held.get(int(v.version), []),
            "created_at": v.creation_timestamp,
            "metrics": key_metrics(run_metrics(client, v.run_id), (), summary.metric_hint) if v.run_id else {},
            "mlflow_url": f"{ui_url}/#/models/{quote_path(name)}/versions/{int(v.version)}",
        }
        for v in newest
    ]


def _model_json(client: MlflowClient, summary: Any, ui_url: str) -> dict[str, Any]:
    data = dataclasses.asdict(summary)
    production = next((a for a in summary.aliases if a.alias == DEFAULT_ALIAS), None)
    data["production_version"] = production.version if production else None
    data["versions"] = _versions(client, summary, ui_url)
    data["history"] = [e.to_json() for e in history(summary.name, client=client)[-MAX_EVENTS:]][::-1]
    data["mlflow_url"] = f"{ui_url}/#/models/{quote_path(summary.name)}"
    return data


def _result_json(result: Any) -> dict[str, Any]:
    data = dataclasses.asdict(result)
    data["checks"] = [dataclasses.asdict(c) for c in result.checks]
    return data


def models_router() -> APIRouter:
    router = APIRouter(prefix="/api/models")

    @router.get("")
    def models(request: Request) -> dict[str, Any]:
        client = _client(request)
        return {"models": [_model_json(client, m, _ui(request)) for m in list_models(client=client)]}

    @router.get("/{name}")
    def model(name: ModelName, request: Request) -> dict[str, Any]:
        client = _client(request)
        get_model(client, name)  # 404 naming the registered models when unknown
        summary = next(m for m in list_models(client=client) if m.name == name)
        return _model_json(client, summary, _ui(request))

    @router.post("/{name}/promote")
    def promote_version(name: ModelName, body: PromoteRequest, request: Request) -> dict[str, Any]:
        return _result_json(promote(name, **body.model_dump(), client=_client(request)))

    @router.get("/{name}/canary")
    def canary(name: ModelName, request: Request) -> dict[str, Any]:
        spec = read_canary(_client(request), name)
        return {"running": False} if spec is None else {"running": True, **spec.to_json()}

    @router.post("/{name}/canary")
    def start_or_step_canary(name: ModelName, body: CanaryRequest, request: Request) -> dict[str, Any]:
        spec = start_canary(name, version=body.version, percent=body.percent, alias=body.alias, guards=body.guards,
                            reason=body.reason, by=body.by, client=_client(request))  # fmt: skip
        return {"running": True, **spec.to_json()}

    @router.post("/{name}/canary/finish")
    def finish(name: ModelName, body: FinishCanaryRequest, request: Request) -> dict[str, Any]:
        return _result_json(finish_canary(name, **body.model_dump(), client=_client(request)))

    @router.delete("/{name}/canary")
    def end(name: ModelName, request: Request, reason: str = "ended from the jobs API") -> dict[str, Any]:
        event = end_canary(name, outcome="rollback", reason=reason, client=_client(request))
        if event is None:
            raise NoCanaryError(f"no canary is running on {name}")
        return event.to_json()

    @router.post("/{name}/rollback")
    def rollback_alias(name: ModelName, body: RollbackRequest, request: Request) -> dict[str, Any]:
        result = rollback(name, **body.model_dump(), client=_client(request))
        return _result_json(result)

    return router
