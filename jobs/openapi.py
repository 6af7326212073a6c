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

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from core import openapi as core_openapi

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


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        document_errors(schema)
        _entry_points(schema, app)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_exception_handler(StarletteHTTPException, _http_exception)


def document_errors(schema: dict[str, Any]) -> None:
    """Every operation answers the service's error body for each status in ERRORS."""
    core_openapi.document_errors(schema, "Error", ERROR_SCHEMA, ERRORS)


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
    allowed = core_openapi.allowed_methods(request.app.openapi(), request.url.path)
    allow = ", ".join(allowed) or (exc.headers or {}).get("Allow", "")
    return JSONResponse({"detail": f"method {request.method} is not allowed here; allowed: {allow}"}, 405,
                        headers={"Allow": allow})  # fmt: skip
