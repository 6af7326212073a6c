"""Atomic checkpoints: a new name per write, a pointer per complete one, and a resume that survives a kill mid-upload.

    .venv/bin/python -m pytest tests/projects/common/test_checkpoint.py -q

The kill test runs a writer in a child process whose artifact store copies slowly (64 KiB, then a pause), as an
upload over a slow link does, and SIGKILLs it while the second checkpoint or its pointer is half in the store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
import torch

from projects.common.checkpoint import CheckpointWriter, ResumeError, has_checkpoint, load_checkpoint

REPO = Path(__file__).resolve().parents[3]

CHILD = """
import shutil, sys, time
import mlflow, torch
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
from projects.common.checkpoint import CheckpointWriter

def slow_log_artifact(self, local_file, artifact_path=None):  # an upload that takes a while, chunk by chunk
    dest = self.artifact_dir + "/" + (artifact_path or "")
    import os
    os.makedirs(dest, exist_ok=True)
    chunk = 16 if local_file.endswith(".json") else 1 << 16
    with open(local_file, "rb") as src, open(os.path.join(dest, os.path.basename(local_file)), "wb") as out:
        while block := src.read(chunk):
            out.write(block)
            out.flush()
            time.sleep(0.02)

with mlflow.start_run(run_id=sys.argv[1]):
    writer = CheckpointWriter(every_seconds=0)
    writer.save("last", {"epoch": 1, "weights": torch.zeros(2**18)})  # 1 MiB, written at full speed
    LocalArtifactRepository.log_artifact = slow_log_artifact
    print("slow", flush=True)
    writer.save("last", {"epoch": 2, "weights": torch.ones(2**18)})
    print("done", flush=True)
"""


def files(artifacts: Path, ext: str) -> list[Path]:
    return sorted((artifacts / "checkpoints").glob(f"last-*.{ext}"))


def kill_when(proc: subprocess.Popen[str], ready: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "the upload never reached the moment to kill"
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.slow  # a child process with torch and mlflow: about 15 s each on a busy 2-core machine
@pytest.mark.parametrize("moment", ["checkpoint", "pointer"])
def test_a_kill_during_an_upload_resumes_from_the_last_complete_checkpoint(
    mlflow_uri: str, tmp_path: Path, moment: str
) -> None:
    run = mlflow.MlflowClient().create_run("0")
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, MLFLOW_TRACKING_URI=mlflow_uri, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(script), run.info.run_id], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    first_size = 0

    def mid_checkpoint() -> bool:
        nonlocal first_size
        pts = files(artifacts, "pt")
        if len(pts) < 2:
            return False
        first_size = pts[0].stat().st_size
        return 0 < pts[1].stat().st_size < first_size // 2

    def mid_pointer() -> bool:
        pointers = files(artifacts, "json")
        return len(pointers) == 2 and 0 < pointers[1].stat().st_size < 40

    kill_when(proc, mid_checkpoint if moment == "checkpoint" else mid_pointer)
    if moment == "checkpoint":  # the store really holds a torn file under the new name
        assert 0 < files(artifacts, "pt")[1].stat().st_size < first_size
        with pytest.raises(Exception):  # noqa: B017, PT011 - torch's own error for a torn zip
            torch.load(files(artifacts, "pt")[1], weights_only=False)
    if moment == "pointer":
        with pytest.raises(json.JSONDecodeError):
            json.loads(files(artifacts, "json")[1].read_text())

    assert has_checkpoint(run.info.run_id)
    state = load_checkpoint(run.info.run_id)
    assert state["epoch"] == 1 and float(state["weights"].sum()) == 0

    with mlflow.start_run(run_id=run.info.run_id):  # the resumed session writes on, under names of its own
        CheckpointWriter(every_seconds=0).save("last", {"epoch": 3, "weights": torch.ones(4)})
    assert load_checkpoint(run.info.run_id)["epoch"] == 3


def test_the_store_keeps_two_checkpoints_of_each_name(mlflow_uri: str) -> None:
    with mlflow.start_run() as run:
        writer = CheckpointWriter(every_seconds=0)
        for epoch in range(1, 5):
            writer.save("last", {"epoch": epoch})
            writer.save("best", {"epoch": epoch, "model": {"w": torch.full((3,), float(epoch))}})
    listed = [f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id, "checkpoints")]
    assert sorted(p.rsplit("-", 1)[0] for p in listed) == ["checkpoints/best"] * 4 + ["checkpoints/last"] * 4
    assert load_checkpoint(run.info.run_id)["epoch"] == 4
    assert float(load_checkpoint(run.info.run_id, "best")["model"]["w"][0]) == 4.0
    assert torch.load(writer.local_path("best"), weights_only=False)["epoch"] == 4


def test_a_pointer_whose_file_does_not_match_is_skipped(mlflow_uri: str, tmp_path: Path) -> None:
    with mlflow.start_run() as run:
        writer = CheckpointWriter(every_seconds=0)
        writer.save("last", {"epoch": 1})
        writer.save("last", {"epoch": 2})
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    newest = files(artifacts, "pt")[-1]
    data = newest.read_bytes()
    newest.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size, other bytes: the SHA-256 catches it
    assert load_checkpoint(run.info.run_id)["epoch"] == 1


def test_runs_from_before_pointers_still_resume_and_a_run_without_any_says_so(mlflow_uri: str, tmp_path: Path) -> None:
    torch.save({"epoch": 7}, tmp_path / "last.pt")
    with mlflow.start_run() as old:
        mlflow.log_artifact(str(tmp_path / "last.pt"), artifact_path="checkpoints")
    assert has_checkpoint(old.info.run_id) and load_checkpoint(old.info.run_id)["epoch"] == 7
    with mlflow.start_run() as empty:
        pass
    assert not has_checkpoint(empty.info.run_id)
    with pytest.raises(ResumeError, match="no complete 'last' checkpoint"):
        load_checkpoint(empty.info.run_id)
