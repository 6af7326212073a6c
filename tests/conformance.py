"""The checks both services' fuzz tests (tests/jobs/test_fuzz.py, tests/serving/test_fuzz.py) run on every case."""

from __future__ import annotations

from typing import Any


def conformance_checks() -> list[Any]:
    """Every check `schemathesis run --checks all` runs on a case: statuses, content types, headers and bodies as the
    schema documents them, 405s with the path's whole `Allow`, invalid data refused and valid data accepted. Each
    service's schemathesis.toml lists, per operation, the statuses no schema can state (a path outside the job
    roots; whether a tensor, a record or an image fits a model depends on the model, which one schema for every
    served model cannot state)."""
    from schemathesis.specs.openapi import checks

    return [
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_headers_conformance,
        checks.response_schema_conformance,
        checks.negative_data_rejection,
        checks.positive_data_acceptance,
        checks.allow_header_conformance,
    ]
