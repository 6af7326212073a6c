"""The job service's OpenAPI document says what the service answers: every error status with its real body, and a
405 whose `Allow` lists every method of the path.

    curl -s localhost:9000/openapi.json | python -m json.tool | grep -A3 '"404"'

FastAPI documents only 200 and a list-shaped 422 (`HTTPValidationError`), while the service answers
`{"detail": "<sentence>", "field": ...}` for every refusal (jobs/errors.py) and also 400, 401, 404, 409, 502 and 503.
`install` replaces `app.openapi` with a generator that documents those on every operation, and fills the start
request's `entry_point` with the MLproject's entry points as they are now (the document is rebuilt per request, so
an edited MLproject shows at once). Starlette's own 405 names only the methods of the first route that matched the
path; the handler here names all of them, as `Allow` must (RFC 9110 15.5.6), read from the document itself.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string", "description": "One sentence naming what is wrong."},
        "field": {"type": ["string", "null"], "description": "The request field to fix, where there is one."},
        "errors": {"type": "array", "items": {"type": "object"}, "description": "Every validation error."},
        "checks": {"type": "array", "items": {"type": "object"}, "description": "Promotion gates and results."},
        "can_force": {"type": "boolean", "description": "The same request with force would move the alias."},
    },
}
ERRORS = {
    "400": "A value of the wrong form (an alias, a version, a significance level).",
    "401": "Missing or wrong bearer token (when KILN_API_TOKEN is set).",
    "404": "No such job, run, model, version or canary.",
    "409": "The job's or alias's state does not allow it (cancelling a finished job, a refused promotion).",
    "422": "A request field that does not fit: named in `field`.",
    "502": "The tracking store failed.",
    "503": "The MLproject cannot be read, or the supervisor is failing.",
}
METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        document_errors(schema)
        _entry_points(schema, app)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_exception_handler(StarletteHTTPException, _http_exception)


def document_errors(schema: dict[str, Any]) -> None:
    """Every operation answers the service's error body for each status in ERRORS; FastAPI's list-shaped 422 goes."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["Error"] = ERROR_SCHEMA
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path in schema.get("paths", {}).values():
        for method, operation in path.items():
            if method not in METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for status, description in ERRORS.items():
                responses[status] = {"description": description, "content": body}


def _entry_points(schema: dict[str, Any], app: FastAPI) -> None:
    """`entry_point` of the start request: one of the MLproject's entry points (unreadable: left open)."""
    start = schema.get("components", {}).get("schemas", {}).get("StartRequest")
    if start is None:
        return
    try:
        names = sorted(app.state.runner.mlproject.entry_points())
    except Exception:  # noqa: BLE001 - the 503 for an unreadable MLproject comes from the start route itself
        return
    start["properties"]["entry_point"]["enum"] = names


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code != 405:
        return await http_exception_handler(request, exc)
    paths = request.app.openapi().get("paths", {})
    exact = paths.get(request.url.path)  # /api/training/list, not /api/training/{job_id}
    matching = [exact] if exact is not None else [
        operations for template, operations in paths.items()
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), request.url.path)
    ]  # fmt: skip
    allowed = {method.upper() for operations in matching for method in operations if method in METHODS}
    allow = ", ".join(sorted(allowed)) or (exc.headers or {}).get("Allow", "")
    return JSONResponse({"detail": f"method {request.method} is not allowed here; allowed: {allow}"}, 405,
                        headers={"Allow": allow})  # fmt: skip
