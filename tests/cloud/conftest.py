"""The team stack for tests/cloud: a real PostgreSQL, moto's server mode as S3/SageMaker/Logs, `kiln server start`.

    .venv/bin/python -m pytest tests/cloud -q

Started once per session (about 20 s) by the tests that need it. Client processes get no AWS credentials:
artifacts travel through the tracking server's proxy.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import moto_sagemaker  # noqa: E402,F401  (patches moto before its server starts)

from cloud.localstack import AWS_TEST_ENV, Stack, TrackingServer, stack  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WEBHOOK_ENV = {"MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true", "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https"}
logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines


@dataclass
class Team:
    stack: Stack
    server: TrackingServer

    @property
    def uri(self) -> str:
        return self.server.uri

    def client_env(self, **extra: str) -> dict[str, str]:
        """A team member's environment: the server's URL, and no AWS credentials at all."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_S3_", "MLFLOW_RUN_ID"))}
        env.update(
            MLFLOW_TRACKING_URI=self.uri,
            MLFLOW_DISABLE_TELEMETRY="true",
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            PYTHONUNBUFFERED="1",
            TQDM_DISABLE="1",
        )
        env.update(extra)
        return env

    def aws_env(self, **extra: str) -> dict[str, str]:
        """An AWS user's environment: the server's URL and moto as every AWS endpoint."""
        return self.client_env(**AWS_TEST_ENV, AWS_ENDPOINT_URL=self.stack.s3.url, **extra)

    def bucket_keys(self, prefix: str = "") -> list[str]:
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.stack.s3.url, region_name="us-east-1")
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.stack.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.fixture(scope="session")
def team() -> Iterator[Team]:
    with stack() as s:
        server = TrackingServer(s.server_env(workers=1, **WEBHOOK_ENV), s.folder).start()
        team = Team(s, server)
        try:
            yield team
        finally:  # a test may have replaced the server (the outage test restarts it): stop whichever runs now
            team.server.stop()
            server.stop()
