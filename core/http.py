"""The one HTTP handler for `KilnError`: each service says how its JSON error body looks, this does the rest.

    python -c "from core.http import error_body; from core.errors import KilnError; print(error_body(KilnError('x')))"

The inference server answers `{"error": ..., "code": ...}` (what KServe V2 and Triton clients read), the job
service `{"detail": ..., "field": ...}` (what FastAPI clients read); both go through `install_error_handler`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.errors import KilnError

Render = Callable[[KilnError], dict[str, Any]]


def error_body(err: KilnError) -> dict[str, Any]:
    """The FastAPI-style body: `detail`, plus `field` when the error names one."""
    body: dict[str, Any] = {"detail": err.message}
    if err.field is not None:
        body["field"] = err.field
    return body


def error_response(err: KilnError, render: Render = error_body) -> Any:
    """A Starlette JSONResponse with the error's status, headers and rendered body."""
    from starlette.responses import JSONResponse

    return JSONResponse(status_code=err.status_code, content=render(err), headers=err.headers or None)


def install_error_handler(app: Any, render: Render = error_body) -> None:
    """Register one handler on a Starlette/FastAPI `app` for every `KilnError` subclass."""

    async def handle(request: Any, exc: Exception) -> Any:
        assert isinstance(exc, KilnError)
        return error_response(exc, render)

    app.add_exception_handler(KilnError, handle)
