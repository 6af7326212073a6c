"""Alias watching: polling swaps by itself; MLflow's signed webhook (sent by MLflow's own delivery code)
triggers an immediate swap; unsigned, tampered, replayed or foreign deliveries are refused."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from serving_helpers import LiveServer, Registry, image_example, seg_model

from serving.deployment.watcher import verify_signature
from serving.edge.app import create_app
from serving.errors import Unauthorized

SECRET = "hush"


def _sign(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    delivery, ts = str(uuid.uuid4()), str(int(time.time()) if timestamp is None else timestamp)
    return {
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": _generate_hmac_signature(secret, delivery, ts, body.decode()),
    }


def _event(name: str = "seg", alias: str = "production", entity: str = "model_version_alias") -> bytes:
    data = {"name": name, "alias": alias, "version": "2"}
    return json.dumps({"entity": entity, "action": "created", "timestamp": "x", "data": data}).encode()


def test_signature_matches_mlflow_and_refuses_tampering() -> None:
    body = _event()
    h = _sign(body)
    args = (h["X-MLflow-Delivery-Id"], h["X-MLflow-Timestamp"])
    now = time.time()
    verify_signature(SECRET, *args, body, h["X-MLflow-Signature"], tolerance=300, now=now)
    verify_signature(SECRET, *args, body, "v1,bm9wZQ== " + h["X-MLflow-Signature"], tolerance=300, now=now)
    with pytest.raises(Unauthorized, match="does not match"):
        verify_signature(SECRET, *args, body + b" ", h["X-MLflow-Signature"], tolerance=300, now=now)
    with pytest.raises(Unauthorized, match="does not match"):
        verify_signature("other", *args, body, h["X-MLflow-Signature"], tolerance=300, now=now)
    with pytest.raises(Unauthorized, match="replay"):
        verify_signature(SECRET, *args, body, h["X-MLflow-Signature"], tolerance=300, now=now + 301)


@pytest.fixture
def served(fresh_registry: Registry) -> Any:
    fresh_registry.register("seg", seg_model(0.5), image_example(32))
    fresh_registry.register("seg", seg_model(0.25), image_example(32), alias=None)
    return fresh_registry


def _wait_for_version(app: Any, version: str, seconds: float = 15) -> float:
    start = time.monotonic()
    while app.state.store.get("seg").model.version != version:
        assert time.monotonic() - start < seconds, f"still serving v{app.state.store.get('seg').model.version}"
        time.sleep(0.02)
    return time.monotonic() - start


def test_polling_picks_up_a_moved_alias(served: Registry) -> None:
    app = create_app(served.settings(("seg",), poll_seconds=0.2))
    with TestClient(app):
        served.set_alias("seg", "2")
        assert _wait_for_version(app, "2") < 15


def test_mlflow_webhook_delivery_swaps_at_once(served: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.entities.webhook import Webhook, WebhookEvent
    from mlflow.webhooks.delivery import _get_or_create_webhook_session, _send_webhook_request

    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")  # MLflow refuses loopback targets otherwise
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https")  # and plain http
    app = create_app(served.settings(("seg",), poll_seconds=0.0, webhook_secret=SECRET))
    with LiveServer(app) as server:
        served.set_alias("seg", "2")
        time.sleep(0.3)
        assert app.state.store.get("seg").model.version == "1"  # polling is off: nothing moves by itself
        event = WebhookEvent("model_version_alias", "created")
        hook = Webhook("w1", "kiln", f"{server.url}/v1/webhooks/mlflow", [event], 0, 0, secret=SECRET)
        payload = {"name": "seg", "alias": "production", "version": "2"}
        response = _send_webhook_request(hook, payload, event, _get_or_create_webhook_session())
        assert response.status_code == 202, response.text
        assert _wait_for_version(app, "2") < 10


@pytest.mark.parametrize(
    ("body", "signing", "status", "message"),
    [
        (_event(), None, 401, "unsigned webhook"),
        (_event(), {"secret": "wrong"}, 401, "does not match"),
        (_event(), {"age": 3600}, 401, "replay"),
        (b"not json", {}, 400, "not JSON"),
    ],
)
def test_bad_deliveries_are_refused(
    served: Registry, body: bytes, signing: dict[str, Any] | None, status: int, message: str
) -> None:
    # Signed here, not at collection: a timestamp taken when the module loads goes stale in a long suite.
    headers = {}
    if signing is not None:
        timestamp = int(time.time()) - signing.get("age", 0)
        headers = _sign(body, secret=signing.get("secret", SECRET), timestamp=timestamp)
    app = create_app(served.settings(("seg",), webhook_secret=SECRET, api_token="tok"))
    with TestClient(app) as c:
        r = c.post("/v1/webhooks/mlflow", content=body, headers=headers)  # no bearer token: HMAC is the auth
        assert r.status_code == status and message in r.json()["error"]


def test_foreign_events_are_acknowledged_and_ignored(served: Registry) -> None:
    app = create_app(served.settings(("seg",), webhook_secret=SECRET))
    with TestClient(app) as c:
        for body in (_event(entity="registered_model"), _event(name="other"), _event(alias="staging")):
            r = c.post("/v1/webhooks/mlflow", content=body, headers=_sign(body))
            assert r.status_code == 200 and r.json()["accepted"] is False


def test_receiver_is_off_without_a_secret(served: Registry) -> None:
    with TestClient(create_app(served.settings(("seg",)))) as c:
        r = c.post("/v1/webhooks/mlflow", content=_event(), headers=_sign(_event()))
        assert r.status_code == 403 and "KILN_WEBHOOK_SECRET" in r.json()["error"]
