"""Fuzz the inference server through its own OpenAPI schema with schemathesis: no request may get a 5xx.

    .venv/bin/python -m pytest tests/serving/test_fuzz.py -q -m slow

The server runs on uvicorn (a real socket) with a tabular and an image model loaded. Every operation of
`/openapi.json` gets schemathesis' positive cases (what the schema allows) and negative ones (what it does not),
a bounded number each, derandomized so a failure repeats. The schema's `name` path parameter is narrowed to the
served names here (the real schema cannot list them: it is an open route), so cases reach the handlers instead of
stopping at a 404. Afterwards the server must still answer a valid request of each model.
"""

from __future__ import annotations

import collections
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from serving_helpers import LiveServer, Registry, image_example, png_bytes, seg_model, tabular_model

from serving.edge.app import create_app
from tests.conformance import conformance_checks

EXAMPLES = 30  # per operation and generation mode (schemathesis stops early where it runs out of distinct cases)
CONFIG = Path(__file__).with_name("schemathesis.toml")  # the refusals no JSON schema can state, per operation


@dataclass
class FuzzResult:
    statuses: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    server_errors: list[str] = field(default_factory=list)
    nonconforming: list[str] = field(default_factory=list)  # answers the schema does not document
    unsendable: int = 0  # cases requests cannot put on the wire (a header with a non-latin-1 byte)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())


def fuzz(raw_schema: dict[str, Any], base_url: str, examples: int, headers: dict[str, str] | None = None) -> FuzzResult:
    """Every operation, positive and negative cases, `examples` of each; returns the statuses seen."""
    import schemathesis
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.config import SchemathesisConfig

    schema = schemathesis.openapi.from_dict(raw_schema, config=SchemathesisConfig.from_path(CONFIG))
    result = FuzzResult()
    session = requests.Session()
    for operation in schema.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            with contextlib.suppress(Unsatisfiable):  # a negative case of an operation that takes nothing
                fuzz_operation(operation.ok(), mode, examples, result, lambda case: case.call(
                    base_url=base_url, session=session, headers=headers, timeout=60))  # fmt: skip
    return result


def fuzz_operation(op: Any, mode: Any, examples: int, result: FuzzResult, send: Any) -> None:
    import hypothesis
    from hypothesis import HealthCheck, Phase

    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],
    )
    @hypothesis.given(op.as_strategy(generation_mode=mode))
    def call(case: Any) -> None:
        try:
            response = send(case)
        except (requests.exceptions.InvalidHeader, UnicodeEncodeError, ValueError):
            result.unsendable += 1
            return
        result.statuses[(op.label, response.status_code)] += 1
        if response.status_code >= 500:
            result.server_errors.append(f"{response.status_code} {case.as_curl_command()[:400]}")
        try:
            case.validate_response(response, checks=conformance_checks())
        except (BaseExceptionGroup, AssertionError) as failure:  # schemathesis: FailureGroup, or one Failure
            result.nonconforming.append(f"{str(failure)[:400]} {case.as_curl_command()[:300]} -> {response.text[:200]}")

    call()


def narrow(raw: dict[str, Any], values: dict[str, list[str]]) -> dict[str, Any]:
    """Parameters named in `values` (path, query or header) take only those values."""
    for item in raw["paths"].values():
        for operation in item.values():
            for param in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if param["name"] in values:
                    param["schema"] = {"type": "string", "enum": values[param["name"]]}
    return raw


@pytest.fixture(scope="module")
def fuzz_registry(template_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    from serving_helpers import new_registry

    reg = new_registry(template_store, tmp_path_factory.mktemp("fuzz-registry"))
    reg.register("seg", seg_model(), image_example(32))
    tab, rows = tabular_model()
    reg.register("tab", tab, rows)
    return reg


def still_answers(base_url: str) -> None:
    seg = requests.post(
        f"{base_url}/v1/models/seg/predict",
        data=png_bytes(np.full((40, 40), 200, np.uint8)),
        headers={"content-type": "image/png"},
        timeout=60,
    )
    assert seg.status_code == 200 and seg.json()["foreground_fraction"] == 1.0, seg.text
    record = {"f0": 1.0, "f1": 1.0, "f2": 0.0, "f3": 0.0}
    tab = requests.post(f"{base_url}/v1/models/tab/predict", json=[record], timeout=60)
    assert tab.status_code == 200 and tab.json()["predictions"] == ["yes"], tab.text


@pytest.mark.slow
def test_fuzzing_the_inference_server_finds_no_5xx(fuzz_registry: Registry) -> None:
    app = create_app(fuzz_registry.settings(("seg", "tab")))
    with LiveServer(app) as server:
        raw = requests.get(f"{server.url}/openapi.json", timeout=30).json()
        served = {"name": ["seg", "tab"], "model": ["seg", "tab"], "X-Kiln-Model": ["seg", "tab"]}
        result = fuzz(narrow(raw, {**served, "model_version": ["1"]}), server.url, EXAMPLES)
        print(f"\n{result.requests} requests, {len(result.server_errors)} 5xx, {result.unsendable} unsendable, "
              f"{len(result.nonconforming)} not as documented")  # fmt: skip
        for line in result.nonconforming[:20]:
            print("  ", line.replace("\n", " ")[:400])
        for (label, status), count in sorted(result.statuses.items()):
            print(f"  {label} {status}: {count}")
        assert result.server_errors == []
        assert result.nonconforming == []
        assert result.requests > 400
        reached = {label for (label, status) in result.statuses if status in (200, 400, 413, 415)}
        assert {"POST /v2/models/{name}/infer", "POST /v1/models/{name}/predict", "POST /invocations"} <= reached
        still_answers(server.url)
