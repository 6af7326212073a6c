"""The inference server's OpenAPI document says what it answers: each error status with the server's error body
(`{"error": ..., "code": ...}`), the PNG a task route returns for `format=png|overlay`, the plain text of the probes
and metrics, and `Allow` on a 405.

    curl -s localhost:8080/openapi.json | python -m json.tool | grep -A3 '"413"'

`install` replaces `app.openapi` (FastAPI documents a 200 and a list-shaped 422 that the server never answers).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from core.openapi import allowed_methods, document_errors

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error", "code"],
    "properties": {
        "error": {"type": "string", "description": "What is wrong, naming the field or value."},
        "code": {"type": "string", "description": "A stable word for the kind of refusal (bad_request, ...)."},
    },
}
ERRORS = {
    "400": "A malformed body, parameter or image; the message names it.",
    "401": "Missing or wrong bearer token (when KILN_API_TOKEN is set).",
    "403": "A webhook whose signature does not verify.",
    "404": "No such model, version or route.",
    "405": "The method is not allowed on this path; `Allow` lists those that are.",
    "406": "The Accept header or format asks for an answer the model's task does not give.",
    "408": "The body did not arrive in time.",
    "413": "The body, or the image it holds, is larger than this model takes.",
    "415": "A content type this route does not take for this model (multipart for a tabular model, ...).",
    "422": "A request the model cannot run.",
    "431": "The request head is too large.",
    "503": "The model is not loaded yet, or the server is busy (Retry-After).",
}
PICTURE_ROUTES = ("/v1/models/{name}/predict",)  # answer image/png for format=png|overlay
TEXT_ROUTES = ("/ping", "/health", "/version", "/metrics")  # answer text/plain (Prometheus' text format for metrics)


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            document_errors(schema, "Error", ERROR_SCHEMA, ERRORS)
            for path in PICTURE_ROUTES:
                for operation in schema.get("paths", {}).get(path, {}).values():
                    content = operation.get("responses", {}).get("200", {}).setdefault("content", {})
                    content["image/png"] = {"schema": {"type": "string", "format": "binary"}}
            _state_constraints(schema)
            for path in TEXT_ROUTES:
                for operation in schema.get("paths", {}).get(path, {}).values():
                    ok = operation.get("responses", {}).get("200", {})
                    ok["content"] = {"text/plain": {"schema": {"type": "string"}}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _state_constraints(schema: dict[str, Any]) -> None:
    """What the handlers refuse that the route declarations do not say: an empty `?model_version=` (400), and an
    /invocations body without exactly one of MLflow's four keys (400)."""
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            for param in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if param.get("name") == "model_version" and param.get("in") == "query":
                    param["schema"] = {"type": "string", "pattern": r"\S"}
            if path == "/invocations" and "requestBody" in operation:
                body = operation["requestBody"]["content"].get("application/json", {}).get("schema")
                if body is not None:
                    keys = list(body.get("properties", {}))
                    body["oneOf"] = [{"required": [key]} for key in keys]


def allow_header(app: FastAPI, path: str) -> str:
    """The `Allow` of a 405 on `path`: every method the document gives it."""
    return ", ".join(allowed_methods(app.openapi(), path))
