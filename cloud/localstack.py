"""A throwaway team stack on one machine: a real PostgreSQL cluster, an S3 endpoint (moto), the tracking server.

    python -m cloud.localstack        # starts all three, prints the URIs, stops on Ctrl-C

For tests and benchmarks (tests/cloud, bench/team_server_bench.py) and for trying the stack without Docker.
PostgreSQL is Debian's (`make postgres-deps` installs it); run as root, the cluster belongs to the `postgres`
user. moto's server mode stands in for MinIO/S3 (and for SageMaker and CloudWatch Logs in the backend tests).
The tracking server is started exactly as `kiln server start` starts it, from the same KILN_SERVER_* settings.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PG_USER, PG_PASSWORD, PG_DATABASE = "kiln", "kiln-test-secret", "mlflow"
AWS_TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pg_bin(name: str) -> str:
    """A PostgreSQL server binary: from PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).is_file():
            return str(folder / name)
    raise FileNotFoundError(f"PostgreSQL's {name} is not installed; run `make postgres-deps`")


@dataclass
class Postgres:
    """One cluster in a temporary folder, on 127.0.0.1:<free port>, password authentication over TCP."""

    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kiln-pg-")))
    port: int = field(default_factory=free_port)

    @property
    def uri(self) -> str:
        return f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{self.port}/{PG_DATABASE}"

    def _as_owner(self, argv: list[str]) -> list[str]:
        # postgres refuses to run as root; as root, run it as Debian's `postgres` user
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def start(self) -> Postgres:
        data, pwfile = self.folder / "data", self.folder / "pw"
        pwfile.write_text(PG_PASSWORD)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
            shutil.chown(pwfile, "postgres")
        initdb = [pg_bin("initdb"), "-D", str(data), "-U", PG_USER, f"--pwfile={pwfile}", "--auth=scram-sha-256"]
        subprocess.run(self._as_owner([*initdb, "-E", "UTF8"]), check=True, capture_output=True, timeout=120)
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
        start = [pg_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.folder / "log"), "-w", "start"]
        subprocess.run(self._as_owner(start), check=True, capture_output=True, timeout=120)
        import psycopg

        admin = f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {PG_DATABASE}")
        return self

    def stop(self) -> None:
        stop = [pg_bin("pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "stop"]
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(self._as_owner(stop), capture_output=True, timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


class S3Endpoint:
    """moto's server mode in this process (a real HTTP endpoint): S3, SageMaker, CloudWatch Logs."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)

    def start(self) -> S3Endpoint:
        for key, value in AWS_TEST_ENV.items():
            os.environ.setdefault(key, value)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.url, **_aws_kwargs()).create_bucket(Bucket=name)

    def stop(self) -> None:
        self.server.stop()


def _aws_kwargs() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS_TEST_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": AWS_TEST_ENV["AWS_DEFAULT_REGION"],
    }


class TrackingServer:
    """`kiln server start` as a subprocess; its output goes to a log file the tests can read."""

    def __init__(self, env: dict[str, str], folder: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.env = {**env, "KILN_SERVER_PORT": str(self.port), "KILN_SERVER_HOST": "127.0.0.1"}
        self.folder = folder
        self.log_path = folder / f"mlflow-server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> TrackingServer:
        argv = [sys.executable, "-m", "kiln", "server", "start"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, env=self.env, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kiln server start exited with {self.proc.returncode}: {self.log()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.uri}/health", timeout=2).status_code == 200:
                    return self
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"the tracking server did not answer within {timeout} s: {self.log()[-2000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@dataclass
class Stack:
    postgres: Postgres
    s3: S3Endpoint
    bucket: str
    folder: Path

    def server_env(self, workers: int = 1, **extra: str) -> dict[str, str]:
        """The settings of `kiln server start` for this stack (and AWS credentials for the server alone)."""
        return {
            **os.environ,
            **AWS_TEST_ENV,
            "KILN_SERVER_BACKEND_STORE_URI": self.postgres.uri,
            "KILN_SERVER_ARTIFACTS_DESTINATION": f"s3://{self.bucket}/mlflow",
            "KILN_SERVER_WORKERS": str(workers),
            "MLFLOW_S3_ENDPOINT_URL": self.s3.url,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            **extra,
        }


@contextlib.contextmanager
def stack(bucket: str = "kiln-artifacts") -> Iterator[Stack]:
    folder = Path(tempfile.mkdtemp(prefix="kiln-stack-"))
    postgres = Postgres().start()
    s3 = S3Endpoint()
    try:
        s3.start()
        s3.create_bucket(bucket)
        yield Stack(postgres, s3, bucket, folder)
    finally:
        s3.stop()
        postgres.stop()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    with stack() as s:
        server = TrackingServer(s.server_env(workers=2), s.folder).start()
        print(f"PostgreSQL  {s.postgres.uri}\nS3 endpoint {s.s3.url} (bucket {s.bucket})")
        print(f"MLFLOW_TRACKING_URI={server.uri}\nCtrl-C stops everything.", flush=True)
        try:
            while server.proc is not None and server.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()


if __name__ == "__main__":
    from core.scripts import script_args

    script_args(sys.argv[1:], "python -m cloud.localstack", __doc__, range(0, 1))
    main()
