"""Hostile input to the job service: schemathesis over its OpenAPI schema finds no 5xx, log-stream offsets that
are no offset of the log are 422s, a model_name the registry would refuse is a 422 at start.

    .venv/bin/python -m pytest tests/jobs/test_fuzz.py -q
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient

from jobs.app import create_app
from jobs.settings import Settings
from tests.conformance import conformance_checks

EXAMPLES = 25  # per operation and generation mode

NAMED = """\
  named:
    parameters:
      model_name: {type: string, default: "tiny_model"}
    command: "python -c 'print(1)'"
"""


@pytest.fixture
def named_client(tiny_project: Path, make_client: Callable[..., TestClient]) -> TestClient:
    mlproject = tiny_project / "MLproject"
    mlproject.write_text(mlproject.read_text() + NAMED)
    return make_client()


@pytest.mark.parametrize(
    "name", ["a/b", "team:model", "..", " ", "x" * 300, "tab\tname", "Üq4dZ3", "__main__", "latest"]
)
def test_a_model_name_the_registry_refuses_is_422_at_start(named_client: TestClient, name: str) -> None:
    r = named_client.post("/api/training/start", json={"entry_point": "named", "params": {"model_name": name}})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "params.model_name" and "model name" in r.json()["detail"]
    assert named_client.get("/api/training/list").json()["jobs"] == []  # nothing queued


def test_log_stream_offsets_must_be_offsets_of_the_log(client: TestClient) -> None:
    job = client.post("/api/training/start", json={"entry_point": "needs_name", "params": {"name": "x"}}).json()
    stream = f"/api/training/{job['job_id']}/logs/stream"
    for query in ("?offset=99999999999999999999999", "?offset=-1", "?offset=5000"):
        r = client.get(stream + query)
        assert r.status_code == 422 and "offset" in r.json()["detail"], (query, r.text)
    for resume in ("99999999999999999999999", "abc", "5000"):
        r = client.get(stream, headers={"Last-Event-ID": resume})
        assert r.status_code == 422 and "Last-Event-ID" in r.json()["detail"], (resume, r.text)


@contextlib.contextmanager
def live(settings: Settings) -> Iterator[str]:
    """The job service on uvicorn on a free port, for a fuzzer that talks HTTP."""
    import uvicorn

    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the job service did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


CONFIG = Path(__file__).with_name("schemathesis.toml")  # the refusals no JSON schema can state, per operation


@pytest.mark.slow
def test_fuzzing_the_job_service_finds_no_5xx(settings: Settings) -> None:
    import hypothesis
    import schemathesis
    from hypothesis import HealthCheck, Phase
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.config import SchemathesisConfig

    statuses: collections.Counter[tuple[str, int]] = collections.Counter()
    errors: list[str] = []
    nonconforming: list[str] = []
    with live(settings) as url:
        raw = requests.get(f"{url}/openapi.json", timeout=30).json()
        schema = schemathesis.openapi.from_dict(raw, config=SchemathesisConfig.from_path(CONFIG))
        session = requests.Session()
        for operation in schema.get_all_operations():
            op = operation.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @hypothesis.settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    suppress_health_check=list(HealthCheck),
                    phases=[Phase.generate],
                )
                @hypothesis.given(op.as_strategy(generation_mode=mode))
                def call(case: Any) -> None:
                    try:
                        response = case.call(base_url=url, session=session, timeout=60)
                    except (requests.exceptions.InvalidHeader, UnicodeEncodeError, ValueError):
                        return
                    statuses[(case.operation.label, response.status_code)] += 1
                    if response.status_code >= 500:
                        errors.append(f"{response.status_code} {case.as_curl_command()[:400]} {response.text[:200]}")
                    try:
                        case.validate_response(response, checks=conformance_checks())
                    except (BaseExceptionGroup, AssertionError) as failure:  # FailureGroup, or one Failure
                        nonconforming.append(
                            f"{str(failure)[:400]} {case.as_curl_command()[:300]} -> {response.text[:200]}"
                        )

                with contextlib.suppress(Unsatisfiable):
                    call()
        print(f"\n{sum(statuses.values())} requests, {len(errors)} 5xx, {len(nonconforming)} not as documented")
        for line in nonconforming[:60]:
            print("  ", line.replace("\n", " ")[:400])
        for (label, status), count in sorted(statuses.items()):
            print(f"  {label} {status}: {count}")
        assert errors == []
        assert nonconforming == []
        assert sum(statuses.values()) > 300
        assert requests.get(f"{url}/api/entry-points", timeout=30).json()["entry_points"]  # still answering
