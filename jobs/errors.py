"""HTTP errors of the job service: small exception classes with `status_code` and `detail`, and their handlers.

    curl -s localhost:9000/api/training/nope        # -> 404 {"detail": "no job 'nope'"}

Every error the API can raise ends as a JSON body `{"detail": "..."}` (plus `field` for a bad request field)
with a 4xx status that says what to fix; failures of the tracking store are 502 and name the store's error.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from mlflow.exceptions import MlflowException

from core.errors import KilnError
from jobs.mlproject import MLprojectError, ParamError
from jobs.runner import JobStateError
from jobs.store import JobNotFoundError


class ApiError(KilnError):
    """Base class of the job service's own refusals."""


class Unauthorized(ApiError):
    status_code = 401

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


class BadRequestField(ApiError):
    status_code = 422

    def __init__(self, detail: str, field: str) -> None:
        super().__init__(detail, field=field)


class Unavailable(ApiError):
    status_code = 503


class TrackingStoreError(ApiError):
    status_code = 502


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=body, headers=headers)


def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    body: dict[str, Any] = {"detail": exc.detail}
    if exc.field is not None:
        body["field"] = exc.field
    return _json(exc.status_code, body, exc.headers or None)


def _param_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ParamError)
    return _json(422, {"detail": exc.detail, "field": exc.field})


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's body/query validation, flattened to one sentence naming the field, as every other error."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    field = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    value = f" (got {first['input']!r})" if "input" in first and first.get("type") != "missing" else ""
    detail = f"{field}: {first.get('msg', 'invalid')}{value}" if field else str(first.get("msg"))
    return _json(422, {"detail": detail, "field": field, "errors": _plain(errors)})


def _plain(errors: Any) -> Any:
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")} for e in errors]


def _mlflow_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MlflowException)
    if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
        return _json(404, {"detail": exc.message})
    if exc.error_code == "INVALID_PARAMETER_VALUE":
        return _json(422, {"detail": exc.message})
    return _json(502, {"detail": f"tracking store error: {exc.message}"})


# The registry words its refusals for the CLI; the page has its own controls for the same things.
CLI_TO_PAGE = (
    (". Use --force to override (the override is recorded)", ""),
    (" (or --force to promote without gates)", ""),
    ("pass --metric NAME", "fill in the gate metric"),
    ("--min/--max need", "a minimum or maximum needs"),
    ("give exactly one of --version or --run", "give exactly one of version or run_id"),
)


def page_wording(detail: str) -> tuple[str, bool]:
    """The registry's message without CLI flags, and whether forcing (the page's force action) would move it."""
    can_force = "--force" in detail
    for cli, page in CLI_TO_PAGE:
        detail = detail.replace(cli, page)
    return detail, can_force


def _registry_error(request: Request, exc: Exception) -> JSONResponse:
    """registry.errors.RegistryError and its subclasses carry their own status_code and detail.

    `can_force` says that the same request with `"force": true` would move the alias (recorded as forced).
    """
    detail, can_force = page_wording(str(getattr(exc, "detail", str(exc))))
    body: dict[str, Any] = {"detail": detail}
    if can_force:
        body["can_force"] = True
    checks = getattr(exc, "checks", ())
    if checks:
        body["checks"] = [{"gate": c.gate, "passed": c.passed, "detail": c.detail} for c in checks]
    return _json(int(getattr(exc, "status_code", 400)), body)


def install(app: FastAPI) -> None:
    from registry.errors import RegistryError

    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(ParamError, _param_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(JobNotFoundError, lambda r, e: _json(404, {"detail": str(e)}))
    app.add_exception_handler(JobStateError, lambda r, e: _json(409, {"detail": str(e)}))
    app.add_exception_handler(MLprojectError, lambda r, e: _json(503, {"detail": str(e)}))
    app.add_exception_handler(MlflowException, _mlflow_error)
    app.add_exception_handler(RegistryError, _registry_error)
