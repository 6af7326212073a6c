"""What a training command prints around its epochs: a header at start and a last line that says what to do next.

    kiln train edgnet --set epochs=2 --set img_size=64 --set num_samples=12

    kiln · edgnet (edgnet) · data drawings-n12-s64-seed0 (12 images) · device cpu
    run edgnet · http://127.0.0.1:5000/#/experiments/0/runs/1f0c...
    ...
    Done: http://127.0.0.1:5000/#/experiments/0/runs/1f0c... · next: kiln promote edgnet --version 3

Run links point at the tracking server when MLFLOW_TRACKING_URI is one, else at `mlflow ui`'s default address
(`make ui`); KILN_MLFLOW_UI_URL names another.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from urllib.parse import quote

import mlflow

from core.settings import read_env

LOCAL_UI = "http://127.0.0.1:5000"  # `mlflow ui` / `make ui`


@dataclass(frozen=True)
class ConsoleSettings:
    mlflow_ui_url: str = ""  # KILN_MLFLOW_UI_URL: base of run links; empty = the tracking server or LOCAL_UI


def ui_base() -> str:
    """Where the MLflow UI is: KILN_MLFLOW_UI_URL, else an http(s) tracking URI, else `mlflow ui`'s default."""
    configured = read_env(ConsoleSettings, os.environ).mlflow_ui_url
    if configured:
        return configured.rstrip("/")
    uri = mlflow.get_tracking_uri()
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI


def run_url(experiment_id: str, run_id: str) -> str:
    from core.ui_links import run_url as ui_run_url

    return ui_run_url(ui_base(), experiment_id, run_id)


def model_url(name: str, version: int | None = None) -> str:
    tail = f"/versions/{version}" if version is not None else ""
    return f"{ui_base()}/#/models/{quote(name)}{tail}"


def active_run_url() -> str:
    run = mlflow.active_run()
    return run_url(run.info.experiment_id, run.info.run_id) if run is not None else ""


def header(family: str, name: str, data: str, device: str) -> None:
    """The first lines inside the run: what trains on what, where, and where to watch it."""
    run = mlflow.active_run()
    print(f"kiln · {family} ({name}) · data {data} · device {device}", flush=True)
    if run is not None:
        print(f"run {run.info.run_name} · {active_run_url()}", flush=True)


def footer(url: str, model_name: str, version: int | None) -> None:
    """The last line: the run's address and the command to type next. A tune trial or cv fold (trained under
    `callbacks.exporting(False)`) prints the address alone: the study's own summary says what to do next."""
    from projects.common.callbacks import figures_wanted

    if not figures_wanted():
        print(f"Done: {url}", flush=True)
        return
    if version is not None:
        step = f"kiln promote {model_name} --version {version}"
    else:
        step = "train longer or on more data (see the line above for why nothing was registered)"
    print(f"Done: {url} · next: {step}", flush=True)


def interactive() -> bool:
    """True when stdout is a terminal: progress bars may redraw; in a log file they print whole lines."""
    return sys.stdout.isatty()
