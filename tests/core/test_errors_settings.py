"""The one error type (CLI and HTTP forms) and the one environment reader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from core.errors import ConfigError, KilnError, SettingsError, cli_errors
from core.settings import read_env, to_env


def test_cli_wrapper_prints_one_line_and_the_exit_code() -> None:
    @click.command()
    @cli_errors
    def cmd() -> None:
        raise KilnError("model 'x' not found", exit_code=3)

    result = CliRunner().invoke(cmd)
    assert result.exit_code == 3
    assert result.output.strip() == "Error: model 'x' not found"


def test_http_handler_renders_status_field_and_headers() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from core.http import install_error_handler

    app = FastAPI()
    install_error_handler(app)

    @app.get("/bad")
    def bad() -> None:
        raise ConfigError("epochs: 'many' is not a number", field="params.epochs", headers={"X-Why": "epochs"})

    response = TestClient(app).get("/bad")
    assert response.status_code == 400
    assert response.json() == {"detail": "epochs: 'many' is not a number", "field": "params.epochs"}
    assert response.headers["x-why"] == "epochs"


@dataclass(frozen=True)
class _Settings:
    port: int = 8080  # the port
    ratio: float = 0.5  # a share
    verbose: bool = False  # chatty
    models: tuple[str, ...] = ()  # names
    home: Path | None = None  # a folder
    tracking_uri: str | None = None  # MLflow's own variable


def test_read_env_parses_by_type_and_overrides_win() -> None:
    env = {"KILN_PORT": "9000", "KILN_VERBOSE": "yes", "KILN_MODELS": "a, b", "MLFLOW_TRACKING_URI": "sqlite:///x"}
    s = read_env(_Settings, env, names={"tracking_uri": "MLFLOW_TRACKING_URI"}, ratio=0.25, home=None)
    assert (s.port, s.ratio, s.verbose, s.models, s.tracking_uri) == (9000, 0.25, True, ("a", "b"), "sqlite:///x")
    assert (
        read_env(
            _Settings,
            to_env(s, names={"tracking_uri": "MLFLOW_TRACKING_URI"}),
            names={"tracking_uri": "MLFLOW_TRACKING_URI"},
        )
        == s
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KILN_PORT": "eighty"}, "KILN_PORT='eighty'"),
        ({"KILN_VERBOSE": "maybe"}, "KILN_VERBOSE"),
        ({"KILN_MODELS": "a,a"}, "given twice"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        read_env(_Settings, env)
