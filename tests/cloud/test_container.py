"""The image's container side in a temporary /opt/ml tree against the team server: train, spot restart, serve.

    .venv/bin/python -m pytest tests/cloud/test_container.py -q

A training is killed (SIGKILL, as a reclaimed spot instance) in the middle of uploading its second checkpoint through
the team server's artifact proxy (a sitecustomize hook slows the upload's reads, so the kill lands while bytes are in
flight), then started again with the same /opt/ml tree, as SageMaker restarts an interrupted spot job: it must resume
from the last complete checkpoint in the same run, without repeating an epoch, and leave the model in /opt/ml/model
for `serve`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import httpx
import mlflow
import psutil
import pytest
from conftest import REPO, Team

from cloud.localstack import free_port
from cloud.sagemaker_backend import pack_source, tracked_files

pytestmark = pytest.mark.slow
EPOCHS = 6
# Loaded by every Python process of the first attempt (PYTHONPATH): uploads of `last-*.pt` checkpoints read their file
# 32 KiB at a time with a 0.1 s pause (320 KB/s), and each upload's start is appended to $KILN_TEST_UPLOAD_MARKER.
SLOW_UPLOADS = """
import io, os, time
from mlflow.store.artifact import http_artifact_repo


class _SlowFile(io.FileIO):
    def read(self, size=-1):
        time.sleep(0.1)
        return super().read(1 << 15 if size and size > 0 else -1)


def _open(path, mode="r", *args, **kwargs):
    name = os.path.basename(str(path))
    if mode == "rb" and name.startswith("last-") and name.endswith(".pt"):
        with open(os.environ["KILN_TEST_UPLOAD_MARKER"], "a") as marker:
            marker.write(name + "\\n")
        return _SlowFile(path, "r")
    return open(path, mode, *args, **kwargs)


http_artifact_repo.open = _open
"""


def opt_ml(tmp_path: Path, hyperparameters: dict[str, str]) -> Path:
    root = tmp_path / "opt" / "ml"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    return root


def container(root: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "cloud.container", *args, "--root", str(root)]
    return subprocess.Popen(
        argv, env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def reclaim(proc: subprocess.Popen[str]) -> None:
    """A spot reclaim: SIGKILL to every process of the container. The entry point runs in a session of its own
    (so that SageMaker's SIGTERM can be forwarded to all of it), so killing the container's process group alone
    would leave the training running as an orphan, still uploading and logging into the run."""
    family = [proc.pid, *(child.pid for child in psutil.Process(proc.pid).children(recursive=True))]
    for pid in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def steps(client: mlflow.MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "train_loss"))


def uploads_started(marker: Path) -> int:
    return len(marker.read_text().split()) if marker.exists() else 0


def checkpoint_epoch(run_id: str) -> int:
    from projects.common.checkpoint import load_checkpoint

    return int(load_checkpoint(run_id)["fit_state"]["epoch"])


def test_spot_restart_resumes_in_the_same_run_then_serves(
    team: Team, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team.uri)
    client = mlflow.MlflowClient(team.uri)
    experiment = client.create_experiment("container-tests")
    run_id = client.create_run(experiment).info.run_id
    archive = pack_source(REPO, tracked_files(REPO), tmp_path / "source.tar.gz")
    boto3.client("s3", endpoint_url=team.stack.s3.url).upload_file(str(archive), "kiln-artifacts", "src/source.tar.gz")
    root = opt_ml(
        tmp_path,
        {
            "kiln_entry_point": "edgnet",
            "kiln_run_id": run_id,
            "kiln_exp": experiment,
            "kiln_source": "s3://kiln-artifacts/src/source.tar.gz",
            "epochs": str(EPOCHS),
            "img_size": "32",
            "num_samples": "8",
            "batch_size": "4",
            "patience": "0",
            "model_name": "sm_edgnet",
            "register": "always",  # 2 validation images are too few for register=auto's test; this is about resume
        },
    )
    env = team.aws_env()
    hooks, marker = tmp_path / "hooks", tmp_path / "uploads.txt"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SLOW_UPLOADS)

    first = container(root, {**env, "PYTHONPATH": str(hooks), "KILN_TEST_UPLOAD_MARKER": str(marker)}, "train")
    deadline = time.monotonic() + 240
    while uploads_started(marker) < 2 and time.monotonic() < deadline:  # the second epoch's last checkpoint
        assert first.poll() is None, first.stdout.read() if first.stdout else ""
        time.sleep(0.01)
    time.sleep(0.5)  # a few 32 KiB reads into the upload
    in_flight = uploads_started(marker)
    reclaim(first)
    first.wait(timeout=30)
    assert in_flight == 2, f"{in_flight} uploads had started: the kill did not land in the second one"
    assert checkpoint_epoch(run_id) == 1, "the resume point is not the last complete checkpoint"

    second = container(root, env, "train")
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    assert "resuming from its last complete checkpoint" in out, out[-4000:]
    assert steps(client, run_id) == list(range(1, EPOCHS + 1)), "an epoch ran twice or went missing"
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and not (root / "output" / "failure").exists()
    assert json.loads((root / "checkpoints" / "kiln-run.json").read_text()) == {"run_id": run_id, "attempt": 2}
    info = json.loads((root / "model" / "kiln-model.json").read_text())
    assert info["name"] == "sm_edgnet" and (root / "model" / "MLmodel").is_file()

    port = free_port()
    server = container(root, team.client_env(MLFLOW_TRACKING_URI=""), "serve", "--port", str(port))
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            try:
                if httpx.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        body = (root / "model" / "serving_input_example.json").read_text()
        answer = httpx.post(f"{base}/invocations", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 200, answer.text
        assert "predictions" in answer.json()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_failure_file_names_the_cause(team: Team, tmp_path: Path) -> None:
    root = opt_ml(tmp_path, {"kiln_entry_point": "no_such_entry", "kiln_run_id": "0" * 32, "kiln_source": "s3://x/y"})
    channel = root / "input" / "data" / "code"
    channel.mkdir(parents=True)
    pack_source(REPO, ["MLproject", "conda.yaml"], channel / "source.tar.gz")  # the code channel, as SageMaker fills it
    proc = container(root, team.client_env(), "train")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1
    failure = (root / "output" / "failure").read_text()
    assert failure == "entry point 'no_such_entry' is not in the source's MLproject"
    assert f"Error: {failure}" in out
