"""`kiln serve`: run the ONNX server for registered models, swapping versions live when their alias moves.

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db kiln serve --models edgnet,skinmodel --port 8080
    kiln serve --alias staging --host 0.0.0.0 --workers 2
    python -m serving.cli edgnet production    # load once the way the server would, print what it would serve

The port is bound first, so a port in use fails at once; then models, alias and their versions are checked, so
a typo in `--models` is one clear line, not a traceback. With one worker the models are loaded before uvicorn
starts; the command prints the page's address, the `/docs` URL and what it loaded. Without `--models` it serves
every model with the alias, and picks up models that get the alias later (polling and the webhook).
With `--workers N` each worker process loads its own sessions; the CLI binds the listening socket itself with
IPPROTO_TCP so that accepted connections get TCP_NODELAY (uvicorn's own multi-worker bind leaves it off:
uvicorn#3149, +40 ms per keep-alive request), and points PROMETHEUS_MULTIPROC_DIR
at a fresh directory so /metrics covers all workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import replace
from typing import Any

import click

from serving.settings import ServeSettings, parse_model_list


@click.command("serve")
@click.option(
    "--models", default=None, help="Comma-separated registered model names. Default: every model with the alias."
)
@click.option("--alias", default=None, help="Registry alias to serve and watch. Default: $KILN_ALIAS or production.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind; 0.0.0.0 for a container.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="Port (SageMaker: 8080).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Level of the JSON log lines (info includes one line per request).",
)
@click.option("--shadow", default=None, help="Also run a share of task requests on this alias (e.g. challenger).")
@click.option("--shadow-percent", type=click.FloatRange(0, 100), default=None, help="Share shadowed [100].")
@click.option("--capture", default=None, help="Save uncertain inputs to this folder or s3://bucket/prefix.")
def serve(
    models: str | None, alias: str | None, host: str, port: int, workers: int, log_level: str,
    shadow: str | None = None, shadow_percent: float | None = None, capture: str | None = None,
) -> None:  # fmt: skip
    """Serve models:/<name>@<alias> over KServe V2, /invocations and task endpoints, swapping live."""
    from serving.edge.middleware import configure_logging

    try:
        names = parse_model_list(models) if models is not None else None
        if names == ():
            raise ValueError("--models is empty")
        rollout_flags = {"shadow": shadow, "shadow_percent": shadow_percent, "capture": capture}
        settings = ServeSettings.from_env(None, models=names, alias=alias, **rollout_flags)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    configure_logging(log_level)
    sock = bind_tcp(host, port)  # before any registry call: a port in use fails at once
    try:
        settings = _preflight(settings)
        _announce(settings, host, sock.getsockname()[1])
        if workers == 1:
            _run_single(settings, sock, host, port, log_level)
        else:
            _run_workers(settings, sock, host, port, workers, log_level)
    finally:
        sock.close()


def _announce(settings: ServeSettings, host: str, port: int) -> None:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
    click.echo(f"kiln serve on {base}/  (try the models in a browser)", err=True)
    click.echo(f"  API docs: {base}/docs", err=True)
    if settings.models:
        click.echo(f"  models: {', '.join(settings.models)} (alias {settings.alias!r})", err=True)
    else:
        click.echo(f"  models: every model with alias {settings.alias!r}; ones promoted later load too", err=True)


def _preflight(settings: ServeSettings) -> ServeSettings:
    """Resolve the model names and each alias now, and fail with one line if any is wrong."""
    import mlflow

    from serving.deployment.store import ModelStore
    from serving.edge.metrics import Metrics

    store = ModelStore(settings, Metrics())
    try:
        names = store.resolve_names()
        versions = {name: store.resolve_version(name) for name in names}
    except Exception as err:
        detail = getattr(err, "detail", None) or str(err)
        raise click.ClickException(
            f"{detail} (tracking URI {settings.tracking_uri or mlflow.get_tracking_uri()})"
        ) from None
    listing = ", ".join(f"{n} v{v}" for n, v in versions.items())
    click.echo(
        f"serving {listing} from alias {settings.alias!r} ({settings.tracking_uri or mlflow.get_tracking_uri()})",
        err=True,
    )
    from dataclasses import replace

    return settings if store.discovering else replace(settings, models=names)


def _run_single(settings: ServeSettings, sock: socket.socket, host: str, port: int, log_level: str) -> None:
    import uvicorn

    from serving.edge.app import create_app

    app = create_app(settings)
    try:
        asyncio.run(app.state.store.start())
    except Exception as err:
        raise click.ClickException(str(err)) from None
    for slot in app.state.store.slots.values():
        model = slot.current.model
        seconds = sum(model.load_seconds.values())
        task = model.contract.task or "no kiln.task"
        click.echo(f"  loaded {model.name} v{model.version} ({task}) in {seconds:.1f} s", err=True)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after a graceful shutdown
        uvicorn.Server(_config(app, host, port, log_level)).run(sockets=[sock])


def _run_workers(
    settings: ServeSettings, sock: socket.socket, host: str, port: int, workers: int, log_level: str
) -> None:
    from uvicorn.supervisors import Multiprocess

    own_state = settings.state_dir is None  # the workers' shared canary, shadow and drift state (rollout/ledger.py)
    if own_state:
        settings = replace(settings, state_dir=tempfile.mkdtemp(prefix="kiln-state-"))
    os.environ.update(settings.env())
    os.environ["KILN_LOG_LEVEL"] = log_level
    own_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="kiln-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    config = _config("serving.edge.app:app_from_env", host, port, log_level, factory=True, workers=workers)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            Multiprocess(config, sockets=[sock]).run()
    finally:
        if own_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if own_state and settings.state_dir:
            shutil.rmtree(settings.state_dir, ignore_errors=True)


def _config(app: Any, host: str, port: int, log_level: str, **extra: Any) -> Any:
    import uvicorn

    from serving.edge.transport import KilnHttpProtocol

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # our JSON logging (configure_logging) stays in charge
        log_level=log_level,
        access_log=False,  # the AccessMiddleware writes one structured line per request instead
        timeout_keep_alive=75,  # longer than common load balancers' idle timeouts (60 s), so they close first
        server_header=False,
        http=KilnHttpProtocol,  # httptools with limits on header bytes and count (serving/edge/transport.py)
        **extra,
    )


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening socket created with proto=IPPROTO_TCP, so asyncio sets TCP_NODELAY on accepted connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise click.ClickException(f"cannot bind {host}:{port}: {err.strerror}") from None
    sock.set_inheritable(True)
    return sock


def check_load(argv: list[str]) -> None:
    """Load `MODEL [ALIAS]` once the way the server would (every step of serving/deployment/loading.py), print
    its status."""
    import json

    from serving.deployment.loading import batch_config
    from serving.deployment.store import ModelStore
    from serving.edge.metrics import Metrics
    from serving.errors import ModelNotFound, SwapRefused

    if not argv:
        sys.exit("usage: python -m serving.cli MODEL [ALIAS]")
    name, alias = argv[0], argv[1] if len(argv) > 1 else "production"
    settings = ServeSettings.from_env(models=(name,), alias=alias)
    store = ModelStore(settings, Metrics())
    try:
        version = store.resolve_version(name)
        model = store.load(name, version)
    except ModelNotFound as err:
        sys.exit(f"Error: {err.message}")
    except SwapRefused as err:
        sys.exit(f"Error: {err}")
    config = batch_config(model, settings)
    summary = {
        "name": name,
        "version": version,
        "task": model.contract.task,
        "inputs": [s.to_json() for s in model.inputs],
        "outputs": [s.to_json() for s in model.outputs],
        "load_seconds": model.load_seconds,
        "ms_per_row": round(model.ms_per_row, 4),
        "max_batch_size": config.max_batch_size,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    from core.scripts import script_args

    check_load(script_args(sys.argv[1:], "python -m serving.cli MODEL [ALIAS]", __doc__, range(1, 3)))
