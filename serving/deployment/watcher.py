"""Notice when a served alias moves: poll the registry every KILN_POLL_SECONDS, and receive MLflow's
registry webhook (`model_version_alias.created`) to react at once.

    # MLflow delivers only to public https URLs unless told otherwise (here: a server on this host, plain http)
    MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https \
        mlflow server --backend-store-uri sqlite:///mlflow.db --workers 1
    python -c "from mlflow import MlflowClient; MlflowClient().create_webhook(name='kiln', \
        url='http://127.0.0.1:8080/v1/webhooks/mlflow', events=['model_version_alias.created'], secret='s3cret')"
    KILN_WEBHOOK_SECRET=s3cret kiln serve --models edgnet

MLflow signs a delivery as base64(HMAC-SHA256(secret, f"{delivery_id}.{timestamp}.{body}")), sent as
`X-MLflow-Signature: v1,<sig>` with `X-MLflow-Delivery-Id` and `X-MLflow-Timestamp` (Standard Webhooks).
The receiver checks the signature in constant time and refuses timestamps outside a tolerance window, so a
captured delivery cannot be replayed later. The payload is only a hint: the watcher re-reads the alias from
the registry and swaps to what the registry says, never to a version named by the request.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from core import vocab
from serving.deployment.store import ModelStore
from serving.edge.http import json_response, parse_json, request_store
from serving.errors import BadRequest, Forbidden, Unauthorized

log = logging.getLogger(vocab.SERVING_LOG + ".watcher")

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_HEADER = "X-MLflow-Delivery-Id"
ALIAS_EVENTS = {("model_version_alias", "created"), ("model_version_alias", "deleted")}


class Watcher:
    """One task per served model: wait for the poll interval or a trigger, then refresh the model."""

    def __init__(self, store: ModelStore, poll_seconds: float) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self._triggers: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._discover_event = asyncio.Event()

    def start(self) -> None:
        for name in self.store.slots:
            self._follow(name)
        if self.store.discovering:  # "every model with the alias": also look for models promoted later
            self._tasks.append(asyncio.get_running_loop().create_task(self._discover(), name="discover"))

    def _follow(self, name: str) -> None:
        self._triggers[name] = asyncio.Event()
        self._tasks.append(asyncio.get_running_loop().create_task(self._watch(name), name=f"watch-{name}"))

    def trigger_discovery(self) -> bool:
        """Ask for an immediate look for newly aliased models; False when the server serves a fixed list."""
        if not self.store.discovering:
            return False
        self._discover_event.set()
        return True

    async def _discover(self) -> None:
        timeout = self.poll_seconds if self.poll_seconds > 0 else None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._discover_event.wait(), timeout)
            self._discover_event.clear()
            try:
                for name in await self.store.discover():
                    self._follow(name)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let discovery die: the next poll tries again
                log.exception("looking for newly aliased models failed unexpectedly")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def trigger(self, name: str) -> bool:
        """Ask for an immediate refresh of `name`; False when it is not served."""
        event = self._triggers.get(name)
        if event is None:
            return False
        event.set()
        return True

    async def _watch(self, name: str) -> None:
        event = self._triggers[name]
        timeout = self.poll_seconds if self.poll_seconds > 0 else None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
            event.clear()
            try:
                await self.store.refresh(name)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the watcher die: the next poll tries again
                log.exception("refresh of %s failed unexpectedly", name)


def verify_signature(
    secret: str, delivery_id: str, timestamp: str, body: bytes, signature: str, *, tolerance: float, now: float
) -> None:
    """Raise Unauthorized unless `signature` is MLflow's v1 HMAC of this delivery and the timestamp is fresh."""
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise Unauthorized(f"{TIMESTAMP_HEADER}={timestamp!r} is not a unix timestamp") from None
    if abs(now - sent_at) > tolerance:
        raise Unauthorized(f"webhook timestamp {sent_at} is more than {tolerance:.0f}s from now; refused as a replay")
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()
    candidates = [part.split(",", 1)[1] for part in signature.split() if part.startswith("v1,")]
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise Unauthorized(f"{SIGNATURE_HEADER} does not match this body and the configured secret")


router = APIRouter(tags=["operations"])


@router.post("/v1/webhooks/mlflow", summary="MLflow registry webhook receiver (HMAC-verified)")
async def mlflow_webhook(request: Request) -> Response:
    settings = request.app.state.settings
    if not settings.webhook_secret:
        raise Forbidden("the webhook receiver is off: start the server with KILN_WEBHOOK_SECRET set")
    body = await request.body()
    headers = request.headers
    missing = [h for h in (SIGNATURE_HEADER, TIMESTAMP_HEADER, DELIVERY_HEADER) if h not in headers]
    if missing:
        raise Unauthorized(f"unsigned webhook: headers {missing} are missing")
    verify_signature(
        settings.webhook_secret,
        headers[DELIVERY_HEADER],
        headers[TIMESTAMP_HEADER],
        body,
        headers[SIGNATURE_HEADER],
        tolerance=settings.webhook_tolerance_seconds,
        now=time.time(),
    )
    event = _event(body)
    watcher: Watcher = request.app.state.watcher
    data = event["data"] if isinstance(event.get("data"), dict) else {}
    name, alias = str(data.get("name")), str(data.get("alias"))
    if (str(event.get("entity")), str(event.get("action"))) not in ALIAS_EVENTS:
        return json_response(
            {"accepted": False, "reason": f"event {event.get('entity')}.{event.get('action')} ignored"}
        )
    if alias == settings.alias and name not in request_store(request).slots and watcher.trigger_discovery():
        log.info("webhook %s: %s got alias %s; looking for new models", headers[DELIVERY_HEADER], name, alias)
        return json_response({"accepted": True, "model": name, "alias": alias}, status_code=202)
    if alias != settings.alias or name not in request_store(request).slots:
        return json_response({"accepted": False, "reason": f"{name}@{alias} is not served here"})
    watcher.trigger(name)
    log.info("webhook %s: %s@%s moved; refreshing", headers[DELIVERY_HEADER], name, alias)
    return json_response({"accepted": True, "model": name, "alias": alias}, status_code=202)


def _event(body: bytes) -> dict[str, Any]:
    try:
        event = parse_json(body)  # depth- and size-checked
    except BadRequest as err:
        raise BadRequest(f"the webhook body is not JSON: {err.message}") from None
    if not isinstance(event, dict):
        raise BadRequest("the webhook body must be a JSON object")
    return event
