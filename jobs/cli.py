"""`kiln jobs`: run the training-job service and its web page.

    kiln jobs serve --port 9000                      # then open http://127.0.0.1:9000/
    KILN_API_TOKEN=secret KILN_MAX_CONCURRENT_JOBS=2 kiln jobs serve --host 0.0.0.0

Settings come from the environment (see jobs.settings); flags override the few that are per-invocation.
uvicorn's line per request is off unless KILN_JOBS_ACCESS_LOG=1 (the page polls every second).
"""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def jobs() -> None:
    """Start, watch, compare and cancel `mlflow run` training jobs from a browser."""


@jobs.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=9000, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option(
    "--project-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder with the MLproject to run (default: $KILN_PROJECT_DIR, else the working directory).",
)
@click.option("--max-concurrent", type=click.IntRange(min=1), default=None, help="Override KILN_MAX_CONCURRENT_JOBS.")
def serve(host: str, port: int, project_dir: Path | None, max_concurrent: int | None) -> None:
    """Serve the job API and page. Stopping the service leaves running jobs alone; a restart adopts them."""
    import uvicorn

    from jobs.app import create_app
    from jobs.runner import ServiceLockedError
    from jobs.settings import Settings, SettingsError

    try:
        settings = Settings.from_env(project_dir=project_dir)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    if max_concurrent is not None:
        settings = settings.with_overrides(max_concurrent_jobs=max_concurrent)
    click.echo(f"kiln jobs: {settings.project_dir / 'MLproject'}, tracking {settings.tracking_uri}")
    click.echo(f"jobs table: {settings.jobs_db}, logs: {settings.logs_dir}")
    if host not in ("127.0.0.1", "localhost", "::1") and settings.api_token is None:
        click.echo("warning: listening beyond localhost without KILN_API_TOKEN; anyone who can reach it can train")
    try:
        app = create_app(settings)
    except ServiceLockedError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"page: http://{host}:{port}/  (MLflow UI links go to {settings.mlflow_ui_url})")
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=settings.access_log)
