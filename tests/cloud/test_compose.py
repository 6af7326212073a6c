"""deploy/compose.yaml runs the commands tests/cloud test, with settings `kiln server` accepts."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from cloud.teamserver import read_settings, server_argv

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose.yaml"


def _env(service: dict) -> dict[str, str]:
    """The service's environment with ${VAR:-default} / ${VAR:?msg} filled in as docker compose would."""

    def fill(match: re.Match[str]) -> str:
        return {"POSTGRES_PASSWORD": "pw", "MINIO_ROOT_PASSWORD": "mpw"}.get(match[1], match[3] or "")

    pattern = re.compile(r"\$\{(\w+)(:?[-?](.*?))?\}")
    return {k: pattern.sub(fill, str(v)) for k, v in service["environment"].items()}


def test_services_run_the_tested_commands() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert services["mlflow"]["command"] == ["kiln", "server", "start"]
    assert services["serve"]["command"][:2] == ["kiln", "serve"]
    assert services["jobs"]["command"][:3] == ["kiln", "jobs", "serve"]
    settings = read_settings(_env(services["mlflow"]))
    assert settings.backend_store_uri == "postgresql://kiln:pw@postgres:5432/mlflow"
    assert settings.s3_endpoint_url == "http://minio:9000" and settings.workers == 4
    argv = server_argv(settings)
    assert "--serve-artifacts" in argv and not any(":pw@" in a for a in argv)
    assert "AWS_SECRET_ACCESS_KEY" not in services["serve"]["environment"]  # clients go through the proxy
    assert "AWS_SECRET_ACCESS_KEY" not in services["jobs"]["environment"]
