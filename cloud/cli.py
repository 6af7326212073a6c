"""`kiln server ...` (the team tracking server) and `kiln sagemaker check` (the SageMaker backend config).

kiln server check        # PostgreSQL, bucket, pool budget, tables; prints what `start` would run
kiln server start        # the same checks, then mlflow server (see cloud/teamserver.py for the settings)
kiln sagemaker check sm.json
"""

from __future__ import annotations

import click

from core.errors import cli_errors
from core.redact import mask_uri


@click.group("server")
def server() -> None:
    """The team tracking server: mlflow server on PostgreSQL with artifacts in S3 (docs/team-server.md)."""


_host = click.option("--host", default=None, help="Interface. Default: $KILN_SERVER_HOST or 127.0.0.1.")
_port = click.option("--port", type=click.IntRange(1, 65535), default=None, help="Default: $KILN_SERVER_PORT or 5000.")
_workers = click.option("--workers", type=click.IntRange(1, 64), default=None, help="Default: 2 per core, 2 to 8.")
_auth = click.option("--auth/--no-auth", default=None, help="MLflow's basic-auth app. Default: $KILN_SERVER_AUTH.")


@server.command("check")
@_host
@_port
@_workers
@_auth
@cli_errors
def check(host: str | None, port: int | None, workers: int | None, auth: bool | None) -> None:
    """Check the database, the bucket and the worker budget; print the server command (secrets masked)."""
    from cloud import teamserver

    settings = teamserver.read_settings(host=host, port=port, workers=workers, auth=auth)
    for line in teamserver.preflight(settings):
        click.echo(line)
    click.echo(teamserver.describe(settings, teamserver.server_argv(settings)))


@server.command("start")
@_host
@_port
@_workers
@_auth
@cli_errors
def start(host: str | None, port: int | None, workers: int | None, auth: bool | None) -> None:
    """Check everything, then run mlflow server with --serve-artifacts in this process."""
    from cloud import teamserver

    teamserver.start(teamserver.read_settings(host=host, port=port, workers=workers, auth=auth))


@click.group("sagemaker")
def sagemaker() -> None:
    """The SageMaker training backend: mlflow run . -e ENTRY --backend sagemaker --backend-config sm.json."""


@sagemaker.command("check")
@click.argument("backend_config")
@click.option("--offline", is_flag=True, help="Check the file only; do not contact the tracking server or AWS.")
@cli_errors
def sagemaker_check(backend_config: str, offline: bool) -> None:
    """Check a backend config (a .json file or JSON text) the way `mlflow run --backend sagemaker` will."""
    import mlflow

    from cloud import sagemaker_backend as smb
    from cloud.sagemaker_config import load_backend_config

    config = load_backend_config(backend_config)
    if not offline:
        uri = smb.resolve_tracking_uri(config.tracking_uri or mlflow.get_tracking_uri())
        smb.check_bucket(smb.Clients.for_config(config).s3, config)
        click.echo(f"tracking server {mask_uri(uri)} answers; bucket {config.bucket!r} exists")
    spot = f", spot (max wait {config.effective_max_wait()} s)" if config.use_spot else ""
    click.echo(f"{config.instance_type} x{config.instance_count}, {config.volume_size_gb} GB{spot}: config OK")
