"""OpenAPI documents that say what a service answers: error statuses with their real body, and `Allow` for a 405.

    python -c "from core.openapi import allowed_methods as a; print(a({'paths': {'/a/{x}': {'get': {}}}}, '/a/1'))"

FastAPI documents an operation's 200 and a list-shaped 422 only. kiln's services answer their own error body for
many more statuses; `document_errors` adds them to every operation of a generated document, so that schemathesis'
status-code and response-schema checks hold. `allowed_methods` reads a path's methods from the document, for the
`Allow` header a 405 must carry (RFC 9110 15.5.6): Starlette's own names only the first route that matched.
"""

from __future__ import annotations

import re
from typing import Any

METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")


def document_errors(schema: dict[str, Any], name: str, body: dict[str, Any], errors: dict[str, str]) -> None:
    """Every operation answers `body` (registered as components/schemas/`name`) for each status in `errors`;
    FastAPI's HTTPValidationError goes, since no kiln service answers it."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components[name] = body
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}
    for path in schema.get("paths", {}).values():
        for method, operation in path.items():
            if method not in METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for status, description in errors.items():
                responses[status] = {"description": description, "content": content}


def allowed_methods(schema: dict[str, Any], path: str) -> list[str]:
    """The methods the document gives `path`: its literal entry if there is one, else every matching template."""
    paths = schema.get("paths", {})
    exact = paths.get(path)  # /api/training/list, not /api/training/{job_id}
    matching = [exact] if exact is not None else [
        operations for template, operations in paths.items()
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), path)
    ]  # fmt: skip
    return sorted({method.upper() for operations in matching for method in operations if method in METHODS})
