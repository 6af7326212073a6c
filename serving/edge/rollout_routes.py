"""The rollout status routes: the shadow comparison, the running canary and the drift of each served model.

curl -s 127.0.0.1:8080/v1/models/edgnet/shadow
curl -s 127.0.0.1:8080/v1/models/edgnet/canary
curl -s 127.0.0.1:8080/v1/models/edgnet/drift
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from serving.edge.http import json_response, request_store
from serving.errors import ModelNotReady
from serving.rollout.canary import CanaryDeployment
from serving.rollout.rollout import Rollout
from serving.rollout.shadow import task_kind

router = APIRouter(tags=["rollout"])


def _rollout(request: Request, name: str) -> Rollout:
    store = request_store(request)
    if name not in store.slots:
        store.get(name)  # raises the 404 with the served names
    rollout: Rollout = request.app.state.rollout
    return rollout


@router.get("/v1/models/{name}/shadow", summary="Shadow comparison with the challenger: agreement, latency, errors")
async def shadow_status(name: str, request: Request) -> Response:
    rollout = _rollout(request, name)
    settings = rollout.settings
    refused = rollout.refused.get((name, "challenger"))
    body: dict[str, Any] = {
        "model": name, "enabled": bool(settings.shadow), "alias": settings.shadow, "percent": settings.shadow_percent,
        "challenger_refused": None if refused is None else refused.to_json(),
    }  # fmt: skip
    shadow = rollout.shadows.get(name)
    if shadow is None:
        return json_response({**body, "challenger_version": None, "requests_compared": 0})
    kind = task_kind(shadow.challenger)
    return json_response({**body, "task": kind, **shadow.stats.to_json(kind)})


@router.get("/v1/models/{name}/canary", summary="The running canary: split, guard rails, both sides' window")
async def canary_status(name: str, request: Request) -> Response:
    rollout = _rollout(request, name)
    slot = rollout.store.slots[name]
    refused = rollout.refused.get((name, "canary"))
    body: dict[str, Any] = {"model": name, "candidate_refused": None if refused is None else refused.to_json()}
    if isinstance(slot.canary, CanaryDeployment):
        return json_response({**body, **slot.canary.to_json()})
    return json_response({**body, "state": "none", "last": rollout.ended.get(name)})


@router.get("/v1/models/{name}/drift", summary="Drift of live inputs and predictions against the training profile")
async def drift_status(name: str, request: Request) -> Response:
    rollout = _rollout(request, name)
    slot = rollout.store.slots[name]
    current = slot.current
    if current is None:
        raise ModelNotReady(f"model {name!r} is not loaded yet")
    body = await asyncio.to_thread(lambda: rollout.monitor(current.model).to_json())
    if isinstance(slot.canary, CanaryDeployment):
        candidate = rollout.monitors.get((name, slot.canary.version))
        body["candidate"] = None if candidate is None else await asyncio.to_thread(candidate.to_json)
    return json_response(body)
