"""The FastAPI application: loads the models, starts the watcher, mounts every protocol, maps errors to JSON.

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db uvicorn --factory serving.edge.app:app_from_env --port 8080

Routes: Open Inference Protocol under /v2 (serving/edge/protocol_v2.py), MLflow's /invocations and /ping
(serving/edge/invocations.py), task endpoints /v1/models/{name}/predict (serving/edge/task_routes.py), the
webhook receiver (serving/deployment/watcher.py), and here the status routes /v1/models, a reload trigger,
and /metrics. Interactive OpenAPI docs are at /docs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from core import vocab
from core.errors import KilnError
from core.http import error_response, install_error_handler
from serving.dataplane import DataPlane
from serving.deployment import watcher
from serving.deployment.store import ModelSlot, ModelStore
from serving.edge import invocations, protocol_v2, rollout_routes, schema, task_routes
from serving.edge.http import json_response, request_store
from serving.edge.metrics import Metrics
from serving.edge.middleware import AccessMiddleware, AuthMiddleware, BodyLimitMiddleware, configure_logging
from serving.edge.pages import install_pages
from serving.errors import BadRequest, MethodNotAllowed, RouteNotFound, ServingError
from serving.rollout.rollout import Rollout
from serving.settings import ServeSettings

log = logging.getLogger(vocab.SERVING_LOG + ".app")

DESCRIPTION = """
An ONNX inference server for models registered in MLflow. Each model is served from
`models:/<name>@<alias>` and swapped live, without failing a request, when the alias moves.

* **Open Inference Protocol** (KServe V2 / Triton) under `/v2`, JSON or binary tensors.
* **MLflow scoring protocol**: `POST /invocations`, `GET /ping`.
* **Task endpoints**: `POST /v1/models/{name}/predict` with an image or JSON records.
* **Status**: `GET /v1/models`; Prometheus metrics at `/metrics`.
* **Try it**: `GET /` is a page that runs a served model on an image you upload and draws the answer.

When the server runs with `KILN_API_TOKEN`, send `Authorization: Bearer <token>` (health, metrics and docs
stay open).
"""


def create_app(settings: ServeSettings | None = None, *, client: Any | None = None) -> FastAPI:
    """Build the app; models load in its lifespan, before the first request is accepted."""
    settings = settings or ServeSettings.from_env()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars in the server log
    metrics = Metrics()
    store = ModelStore(settings, metrics, client)
    rollout = Rollout(store, settings, metrics)  # challenger, canary, drift (serving/rollout/rollout.py)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not store.slots:  # `kiln serve` with one worker loads before the port opens
            await store.start()
        rollout.start()
        app.state.watcher.start()
        try:
            yield
        finally:
            await app.state.watcher.stop()
            rollout.close()
            store.close()

    app = FastAPI(
        title="kiln serving", version=protocol_v2._server_version(), description=DESCRIPTION, lifespan=lifespan,
        docs_url=None, redoc_url=None,  # /docs is served from the vendored Swagger UI (serving/edge/pages.py), no CDN
    )  # fmt: skip
    app.state.settings, app.state.store, app.state.metrics = settings, store, metrics
    app.state.watcher = watcher.Watcher(store, settings.poll_seconds)
    app.state.rollout = rollout
    app.state.dataplane = DataPlane(store, rollout)  # every protocol's request path (serving/dataplane.py)
    for router in (protocol_v2.router, invocations.router, task_routes.router, status_router, watcher.router):
        app.include_router(router)
    app.include_router(rollout_routes.router)
    install_pages(app)
    _add_error_handlers(app)
    schema.install(app)  # the OpenAPI document names every error status and its body (serving/edge/schema.py)
    app.add_middleware(FastPath, routes=_fast_routes(protocol_v2.router, invocations.router, task_routes.router))
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        timeout=settings.body_timeout_seconds,
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
    )
    if settings.api_token:
        app.add_middleware(AuthMiddleware, token=settings.api_token, metrics_open=settings.metrics_open)
    app.add_middleware(AccessMiddleware, metrics=metrics, enabled=settings.access_log)
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` and for `kiln serve --workers N` worker processes."""
    configure_logging(os.environ.get("KILN_LOG_LEVEL", "info"))
    return create_app(ServeSettings.from_env())


# --- the inference routes' fast path ----------------------------------------------------------------------

Handler = Callable[..., Awaitable[Response]]


class FastPath:
    """Dispatch the inference routes by splitting the path, instead of walking every route's regex and
    solving FastAPI's dependencies (together ~0.3 ms a request, more than a tabular model's whole run).
    The routes stay registered with FastAPI, so /docs describes them and every other route goes there."""

    def __init__(self, app: ASGIApp, routes: dict[str, APIRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._match(scope) if scope["type"] == "http" and scope["method"] == "POST" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        route, params = found
        scope["route"], scope["endpoint"], scope["path_params"] = route, route.endpoint, params
        handler: Handler = route.endpoint
        try:
            response = await handler(request=Request(scope, receive), **params)
        except KilnError as err:
            response = error_response(err, render_error)
        await response(scope, receive, send)

    def _match(self, scope: Scope) -> tuple[APIRoute, dict[str, str]] | None:
        parts = scope["path"].split("/")
        if len(parts) == 2 and parts[1] == "invocations":
            return self.routes["invocations"], {}
        if len(parts) < 5 or parts[2] != "models" or not parts[3]:
            return None
        name = parts[3]
        if len(parts) == 5 and parts[1:3] == ["v1", "models"] and parts[4] == "predict":
            return self.routes["predict"], {"name": name}
        if parts[1] == "v2" and parts[-1] == "infer":
            if len(parts) == 5:
                return self.routes["infer"], {"name": name}
            if len(parts) == 7 and parts[4] == "versions" and parts[5]:
                return self.routes["infer_version"], {"name": name, "model_version": parts[5]}
        return None


def _fast_routes(*routers: APIRouter) -> dict[str, APIRoute]:
    by_path = {
        route.path: route
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and "POST" in (route.methods or ())
    }
    return {
        "invocations": by_path["/invocations"],
        "predict": by_path["/v1/models/{name}/predict"],
        "infer": by_path["/v2/models/{name}/infer"],
        "infer_version": by_path["/v2/models/{name}/versions/{model_version}/infer"],
    }


# --- status routes ----------------------------------------------------------------------------------------

status_router = APIRouter(tags=["status"])


@status_router.get("/v1/models", summary="What is served: version, alias, loaded_at, last swap error")
async def list_models(request: Request) -> Response:
    store = request_store(request)
    return json_response({"models": [slot_status(s, store) for s in store.slots.values()]})


@status_router.get("/v1/models/{name}", summary="Status of one served model")
async def get_model(name: str, request: Request) -> Response:
    store = request_store(request)
    if name not in store.slots:
        store.get(name)  # raises the 404 with the served names
    return json_response(slot_status(store.slots[name], store))


@status_router.post("/v1/models/{name}/reload", summary="Re-read the alias now, retrying a refused version")
async def reload_model(name: str, request: Request) -> Response:
    store = request_store(request)
    if name not in store.slots:
        store.get(name)  # raises the 404 with the served names
    store.forget_failures(name)
    swapped = await store.refresh(name)
    return json_response({"swapped": swapped, **slot_status(store.slots[name], store)})


@status_router.get("/metrics", summary="Prometheus metrics", include_in_schema=True)
async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(), media_type=registry.content_type)


def slot_status(slot: ModelSlot, store: ModelStore) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": slot.name,
        "alias": slot.alias,
        "ready": slot.current is not None,
        "swaps": slot.swaps,
        "last_swap_error": slot.last_error.to_json() if slot.last_error else None,
    }
    if slot.current is None:
        return status
    model, batcher = slot.current.model, slot.current.batcher
    settings = store.settings
    return {
        **status,
        "version": model.version,
        "loaded_at": model.loaded_at.isoformat(),
        "run_id": model.run_id,
        **model.contract.to_json(),
        "inputs": [s.to_json() for s in model.inputs],
        "outputs": [s.to_json() for s in model.outputs],
        "ort_threads": model.threads,
        "warmup": model.warmup,
        "warm_run_ms": round(model.run_ms, 3),
        "load_seconds": model.load_seconds,
        "batching": {
            "enabled": batcher.batchable,
            "max_batch_size": batcher.config.max_batch_size,
            "max_queue_delay_ms": settings.max_queue_delay_ms,
            "runs_on": f"event loop up to {batcher.config.inline_max_rows} rows" if batcher.inline else "thread pool",
            "queued": batcher.queued,
        },
    }


# --- errors -----------------------------------------------------------------------------------------------


def render_error(err: KilnError) -> dict[str, Any]:
    """The server's JSON error body: `error` is where KServe V2 and Triton clients look for the message."""
    return {"error": err.message, "code": err.code}


def _add_error_handlers(app: FastAPI) -> None:
    install_error_handler(app, render_error)  # every KilnError, ServingError included

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            error: ServingError = RouteNotFound(f"no route {request.method} {request.url.path}; see /docs")
        elif exc.status_code == 405:
            allow = schema.allow_header(request.app, request.url.path) or (exc.headers or {}).get("Allow", "")
            error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}; allowed: {allow}")
            response_405: Response = error_response(error, render_error)
            response_405.headers["Allow"] = allow  # every method of the path (RFC 9110), not the first route's
            return response_405
        else:
            return json_response({"error": str(exc.detail), "code": "http_error"}, status_code=exc.status_code)
        response: Response = error_response(error, render_error)
        return response

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        response: Response = error_response(BadRequest(problems or "invalid request"), render_error)
        return response

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    # no handler for Exception: AccessMiddleware (serving/edge/middleware.py) answers the 500 and logs it once
