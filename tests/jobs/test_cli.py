"""`kiln jobs serve` refuses bad settings with one line naming them, before any server starts.

.venv/bin/python -m pytest tests/jobs/test_cli.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kiln.cli import main


def test_jobs_is_mounted_on_the_kiln_command() -> None:
    result = CliRunner().invoke(main, ["jobs", "serve", "--help"])
    assert result.exit_code == 0 and "--port" in result.output and "--max-concurrent" in result.output


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KILN_MAX_CONCURRENT_JOBS": "none"}, "Error: KILN_MAX_CONCURRENT_JOBS='none' is not an integer"),
        ({"MLFLOW_TRACKING_URI": "./mlruns"}, "Error: MLFLOW_TRACKING_URI='./mlruns' is a file store"),
    ],
)
def test_bad_settings_stop_the_start(tiny_project: Path, env: dict[str, str], message: str) -> None:
    result = CliRunner().invoke(main, ["jobs", "serve", "--project-dir", str(tiny_project)], env=env)
    assert result.exit_code == 1 and message in result.output


def test_a_folder_without_mlproject_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["jobs", "serve", "--project-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert f"project folder '{tmp_path}' (KILN_PROJECT_DIR, --project-dir) has no MLproject file" in result.output
