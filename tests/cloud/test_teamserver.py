"""`kiln server`: settings, the checks before start (one line each, password masked), and an outage mid-run.

.venv/bin/python -m pytest tests/cloud/test_teamserver.py -q
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pytest
from conftest import WEBHOOK_ENV, Team

from cloud.localstack import PG_PASSWORD, TrackingServer
from cloud.teamserver import check_pool_budget, read_settings, server_argv
from core.errors import ConfigError, SettingsError

GOOD = {
    "KILN_SERVER_BACKEND_STORE_URI": "postgresql://kiln:pw-123@db:5432/mlflow",
    "KILN_SERVER_ARTIFACTS_DESTINATION": "s3://kiln-artifacts/mlflow",
}


def test_argv_carries_no_secret_and_workers_are_bounded() -> None:
    settings = read_settings({**GOOD, "KILN_SERVER_AUTH": "1", "KILN_SERVER_ADMIN_PASSWORD": "adm-pw"})
    argv = server_argv(settings)
    assert "--serve-artifacts" in argv and argv[argv.index("--app-name") + 1] == "basic-auth"
    assert not any("pw-123" in a or "adm-pw" in a for a in argv)
    assert 2 <= settings.worker_count() <= 8


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KILN_SERVER_ARTIFACTS_DESTINATION": "s3://b"}, "KILN_SERVER_BACKEND_STORE_URI"),
        ({**GOOD, "KILN_SERVER_BACKEND_STORE_URI": "./mlruns"}, "KILN_SERVER_BACKEND_STORE_URI"),
        ({**GOOD, "KILN_SERVER_ARTIFACTS_DESTINATION": "/data/artifacts"}, "KILN_SERVER_ARTIFACTS_DESTINATION"),
        ({**GOOD, "KILN_SERVER_WORKERS": "many"}, "KILN_SERVER_WORKERS"),
        ({**GOOD, "KILN_SERVER_AUTH": "1"}, "KILN_SERVER_ADMIN_PASSWORD"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as err:
        read_settings(env)
    assert named in err.value.message and "pw-123" not in err.value.message


def test_pool_budget() -> None:
    settings = read_settings({**GOOD, "KILN_SERVER_WORKERS": "8"})
    with pytest.raises(ConfigError, match="KILN_SERVER_WORKERS: 8 workers x 15 pooled connections = 120"):
        check_pool_budget(settings, 100)
    check_pool_budget(read_settings({**GOOD, "KILN_SERVER_WORKERS": "4"}), 100)


def kiln_server_check(team: Team, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**team.stack.server_env(), **env}
    argv = [sys.executable, "-m", "kiln", "server", "check"]
    return subprocess.run(argv, env=full, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_checks_against_the_real_stack(team: Team) -> None:
    good = kiln_server_check(team)
    assert good.returncode == 0, good.stderr
    assert "postgresql://kiln:***@127.0.0.1" in good.stdout and PG_PASSWORD not in good.stdout + good.stderr

    wrong = team.stack.postgres.uri.replace(PG_PASSWORD, "wrong-password")
    bad = kiln_server_check(team, KILN_SERVER_BACKEND_STORE_URI=wrong)
    assert bad.returncode == 1 and "wrong-password" not in bad.stdout + bad.stderr
    assert bad.stderr.strip().splitlines() == [
        f"Error: KILN_SERVER_BACKEND_STORE_URI: PostgreSQL refused the user name or password "
        f"(postgresql://kiln:***@127.0.0.1:{team.stack.postgres.port}/mlflow)"
    ]
    missing = kiln_server_check(team, KILN_SERVER_ARTIFACTS_DESTINATION="s3://no-such-bucket/mlflow")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"Error: KILN_SERVER_ARTIFACTS_DESTINATION: bucket 'no-such-bucket' at {team.stack.s3.url} does not exist"
    )
    assert PG_PASSWORD not in team.server.log(), "the server's log shows the database password"


TRAINING = textwrap.dedent(
    """
    import time, mlflow
    with mlflow.start_run() as run:
        print(run.info.run_id, flush=True)
        for epoch in range(1, 9):
            mlflow.log_metrics({"loss": 1.0 / epoch}, step=epoch, synchronous=False)
            mlflow.log_text(f"epoch {epoch}", "checkpoints/last.txt")  # synchronous, like kiln's last.pt
            time.sleep(0.5)
    """
)


@pytest.mark.slow
def test_a_server_outage_mid_run_loses_nothing(team: Team, tmp_path: Path) -> None:
    """MLflow retries each call (7 times by default, backing off 2, 4, ... s): a short outage only stalls."""
    proc = subprocess.Popen(
        [sys.executable, "-c", TRAINING],
        env=team.client_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    client = mlflow.MlflowClient(team.uri)
    while len(client.get_metric_history(run_id, "loss")) < 2:
        time.sleep(0.1)
    team.server.stop()
    time.sleep(5)
    team.server = TrackingServer(team.stack.server_env(workers=1, **WEBHOOK_ENV), team.stack.folder, team.server.port)
    team.server.start()
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert sorted(m.step for m in client.get_metric_history(run_id, "loss")) == list(range(1, 9))
    assert client.get_run(run_id).info.status == "FINISHED"
