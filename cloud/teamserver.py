"""The team tracking server: `mlflow server` on PostgreSQL, artifacts in an S3 bucket served through the server.

    KILN_SERVER_BACKEND_STORE_URI=postgresql://kiln:PASSWORD@db:5432/mlflow \
    KILN_SERVER_ARTIFACTS_DESTINATION=s3://kiln-artifacts/mlflow \
    MLFLOW_S3_ENDPOINT_URL=http://minio:9000 kiln server start

Before the server starts, `preflight` connects to PostgreSQL (a wrong password or an unreachable host is one
line naming KILN_SERVER_BACKEND_STORE_URI, with the password masked), creates or upgrades MLflow's tables once
(so that several workers never race to migrate an empty database), checks that the bucket exists, and that
the workers' connection pools fit in PostgreSQL's `max_connections`. The server then runs with
`--serve-artifacts`: clients send and fetch artifacts through it and need no S3 credentials.

Secrets stay out of the command line and the logs: the store URI reaches `mlflow server` through its
MLFLOW_BACKEND_STORE_URI variable, and everything printed goes through `core.redact`.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ConfigError, SettingsError
from core.redact import mask_uri, redact
from core.settings import read_env

URI_VAR = "KILN_SERVER_BACKEND_STORE_URI"
DEST_VAR = "KILN_SERVER_ARTIFACTS_DESTINATION"
# SQLAlchemy's defaults, which MLflow keeps unless MLFLOW_SQLALCHEMYSTORE_* say otherwise
DEFAULT_POOL_SIZE, DEFAULT_MAX_OVERFLOW = 5, 10
RESERVED_CONNECTIONS = 10  # left for psql, migrations, backups and the auth app


@dataclass(frozen=True)
class TeamServerSettings:
    backend_store_uri: str = ""  # KILN_SERVER_BACKEND_STORE_URI: postgresql://user:password@host:5432/db
    artifacts_destination: str = ""  # KILN_SERVER_ARTIFACTS_DESTINATION: s3://bucket/prefix
    host: str = "127.0.0.1"  # KILN_SERVER_HOST: 0.0.0.0 in a container
    port: int = 5000  # KILN_SERVER_PORT
    workers: int = 0  # KILN_SERVER_WORKERS: uvicorn worker processes; 0 = 2 per core, at least 2, at most 8
    auth: bool = False  # KILN_SERVER_AUTH: MLflow's basic-auth app (logins; users and permissions on PostgreSQL)
    admin_password: str | None = None  # KILN_SERVER_ADMIN_PASSWORD: the first admin's password (auth only)
    allowed_hosts: str | None = None  # KILN_SERVER_ALLOWED_HOSTS: Host headers accepted; unset = MLflow's local ones
    s3_endpoint_url: str | None = None  # MLFLOW_S3_ENDPOINT_URL: MinIO or another S3-compatible endpoint

    def worker_count(self) -> int:
        if self.workers:
            return self.workers
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(2, min(8, 2 * cores))


def read_settings(environ: dict[str, str] | None = None, **overrides: Any) -> TeamServerSettings:
    env = dict(os.environ if environ is None else environ)
    settings = read_env(
        TeamServerSettings,
        env,
        prefix="KILN_SERVER_",
        names={"s3_endpoint_url": "MLFLOW_S3_ENDPOINT_URL"},
        **overrides,
    )
    if not settings.backend_store_uri:
        raise SettingsError(f"{URI_VAR} is not set; e.g. postgresql://kiln:PASSWORD@localhost:5432/mlflow")
    if not settings.backend_store_uri.startswith(("postgresql", "mysql", "mssql", "sqlite")):
        raise SettingsError(
            f"{URI_VAR}={mask_uri(settings.backend_store_uri)!r} is not a database URI (postgresql://...)"
        )
    if not settings.artifacts_destination.startswith("s3://") or len(settings.artifacts_destination) <= 5:
        raise SettingsError(f"{DEST_VAR}={settings.artifacts_destination!r} is not an s3://bucket/prefix URI")
    if settings.workers < 0 or not 1 <= settings.port <= 65535:
        raise SettingsError("KILN_SERVER_WORKERS must be >= 0 and KILN_SERVER_PORT within 1-65535")
    if settings.auth and not settings.admin_password and not env.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
        raise SettingsError("KILN_SERVER_AUTH=1 needs KILN_SERVER_ADMIN_PASSWORD for the first admin login")
    return settings


def secrets(settings: TeamServerSettings) -> list[str]:
    """Every secret value these settings carry, for `redact`."""
    from urllib.parse import urlsplit

    values = [urlsplit(settings.backend_store_uri).password, settings.admin_password]
    values += [os.environ.get(k) for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_AUTH_ADMIN_PASSWORD")]
    return [v for v in values if v]


# --- checks --------------------------------------------------------------------------------------------------


def check_database(settings: TeamServerSettings) -> int:
    """Connect once; return PostgreSQL's max_connections (0 for other databases). One line on failure."""
    import sqlalchemy

    uri = settings.backend_store_uri
    args = {"connect_timeout": 10} if uri.startswith("postgresql") else {}
    engine = sqlalchemy.create_engine(uri, connect_args=args, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            if engine.dialect.name != "postgresql":
                return 0
            return int(conn.execute(sqlalchemy.text("SHOW max_connections")).scalar_one())
    except sqlalchemy.exc.SQLAlchemyError as err:
        raise ConfigError(f"{URI_VAR}: {_database_problem(err)} ({mask_uri(uri)})", field=URI_VAR) from None
    except ImportError as err:
        raise ConfigError(f"{URI_VAR}: no driver for {uri.split(':')[0]} ({err})", field=URI_VAR) from None
    finally:
        engine.dispose()


def _database_problem(err: Exception) -> str:
    text = str(getattr(err, "orig", None) or err)
    lowered = text.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return "PostgreSQL refused the user name or password"
    if "does not exist" in lowered and "database" in lowered:
        return "the database does not exist (createdb it first)"
    if "connection refused" in lowered or "could not translate host" in lowered or "timeout" in lowered:
        return "cannot reach the database server"
    first = redact(text.strip().splitlines()[0] if text.strip() else type(err).__name__)
    return f"cannot connect: {first}"


def check_pool_budget(settings: TeamServerSettings, max_connections: int) -> None:
    """Each worker keeps its own pool; all of them must fit in max_connections, with room for other clients."""
    if not max_connections:
        return
    pool = int(os.environ.get("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE") or DEFAULT_POOL_SIZE)
    overflow = int(os.environ.get("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW") or DEFAULT_MAX_OVERFLOW)
    workers = settings.worker_count()
    needed = workers * (pool + overflow) * (2 if settings.auth else 1)
    if needed > max_connections - RESERVED_CONNECTIONS:
        raise ConfigError(
            f"KILN_SERVER_WORKERS: {workers} workers x {pool + overflow} pooled connections"
            f"{' x 2 (auth)' if settings.auth else ''} = {needed} exceed PostgreSQL's max_connections "
            f"{max_connections} minus {RESERVED_CONNECTIONS}; use fewer workers or lower "
            "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE / MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW",
            field="KILN_SERVER_WORKERS",
        )


def check_bucket(settings: TeamServerSettings) -> None:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket = settings.artifacts_destination[5:].split("/", 1)[0]
    s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url)
    where = f" at {settings.s3_endpoint_url}" if settings.s3_endpoint_url else ""
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        what = "does not exist" if code in ("404", "NoSuchBucket", "NotFound") else f"cannot be used ({code})"
        raise ConfigError(f"{DEST_VAR}: bucket {bucket!r}{where} {what}", field=DEST_VAR) from None
    except BotoCoreError as err:
        raise ConfigError(f"{DEST_VAR}: cannot reach S3{where}: {redact(str(err))}", field=DEST_VAR) from None


def migrate(settings: TeamServerSettings) -> None:
    """Create or upgrade MLflow's tables once, before the workers start."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    try:
        SqlAlchemyStore(settings.backend_store_uri, "mlflow-artifacts:/")  # type: ignore[no-untyped-call]
    except Exception as err:
        raise ConfigError(
            f"{URI_VAR}: could not create MLflow's tables: {redact(str(err), secrets(settings))}"
        ) from None


def preflight(settings: TeamServerSettings) -> list[str]:
    """Every check before the server starts; returns the lines to print."""
    max_connections = check_database(settings)
    check_pool_budget(settings, max_connections)
    check_bucket(settings)
    migrate(settings)
    pool = f", PostgreSQL max_connections {max_connections}" if max_connections else ""
    return [
        f"backend store {mask_uri(settings.backend_store_uri)}: reachable, tables up to date{pool}",
        f"artifacts {settings.artifacts_destination}"
        + (f" via {settings.s3_endpoint_url}" if settings.s3_endpoint_url else "")
        + ": bucket exists; served through the server (--serve-artifacts)",
    ]


# --- the server ----------------------------------------------------------------------------------------------


def server_argv(settings: TeamServerSettings) -> list[str]:
    """`mlflow server`'s argv; no secret is in it (the store URI travels in MLFLOW_BACKEND_STORE_URI)."""
    argv = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--artifacts-destination",
        settings.artifacts_destination,
        "--serve-artifacts",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--workers",
        str(settings.worker_count()),
    ]
    if settings.allowed_hosts:
        argv += ["--allowed-hosts", settings.allowed_hosts]
    if settings.auth:
        argv += ["--app-name", "basic-auth"]
    return argv


def server_env(settings: TeamServerSettings, auth_dir: Path | None = None) -> dict[str, str]:
    """The server's environment: the secrets, and with auth the config file that points at PostgreSQL."""
    env = dict(os.environ, MLFLOW_BACKEND_STORE_URI=settings.backend_store_uri, MLFLOW_DISABLE_TELEMETRY="true")
    if settings.s3_endpoint_url:
        env["MLFLOW_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    if settings.auth:
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(write_auth_config(settings, auth_dir))
        if settings.admin_password:
            env["MLFLOW_AUTH_ADMIN_PASSWORD"] = settings.admin_password
    return env


def write_auth_config(settings: TeamServerSettings, folder: Path | None) -> Path:
    """basic_auth.ini with the users and permissions on the same PostgreSQL database, readable by us only."""
    folder = folder or Path(tempfile.mkdtemp(prefix="kiln-auth-"))
    path = folder / "basic_auth.ini"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = {settings.backend_store_uri.replace('%', '%%')}\n"
            "admin_username = admin\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
    return path


def describe(settings: TeamServerSettings, argv: list[str]) -> str:
    return f"MLFLOW_BACKEND_STORE_URI={shlex.quote(mask_uri(settings.backend_store_uri))} " + " ".join(
        shlex.quote(a) for a in argv
    )


def start(settings: TeamServerSettings) -> None:
    """Run the checks, then replace this process with `mlflow server`."""
    for line in preflight(settings):
        print(f"kiln server: {line}", file=sys.stderr, flush=True)
    argv, env = server_argv(settings), server_env(settings)
    print(f"kiln server: {describe(settings, argv)}", file=sys.stderr, flush=True)
    os.execve(argv[0], argv, env)
