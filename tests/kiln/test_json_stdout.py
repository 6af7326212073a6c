"""`kiln train|cv --json`: stdout holds one JSON document, every progress line goes to stderr.

.venv/bin/python -m pytest tests/kiln/test_json_stdout.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.stdio import progress_to_stderr

TINY_EDGNET = ["--set", "epochs=1", "--set", "img_size=32", "--set", "num_samples=6", "--set", "base_channels=4",
               "--set", "register=never", "--set", "overlay_every=0"]  # fmt: skip


def kiln(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "KILN_CACHE_DIR": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "kiln", *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)  # fmt: skip


def test_progress_to_stderr_moves_the_file_descriptor_too() -> None:
    code = (
        "import os, sys\nfrom core.stdio import progress_to_stderr\nkept = sys.stdout\n"
        "with progress_to_stderr():\n    print('progress')\n    kept.write('held\\n'); kept.flush()\n"
        "    os.write(1, b'from C\\n')\nprint('result')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout == "result\n", done.stderr
    assert "progress" in done.stderr and "held" in done.stderr and "from C" in done.stderr
    with progress_to_stderr(enabled=False):
        pass


@pytest.mark.slow
def test_kiln_train_json_stdout_is_only_json(tmp_path: Path) -> None:
    done = kiln(["train", "edgnet", *TINY_EDGNET, "--json"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "best_val_iou" in json.loads(done.stdout)
    assert "Epoch 1/1" in done.stderr and "Done: http" in done.stderr


@pytest.mark.slow
def test_kiln_cv_json_stdout_is_only_json(tmp_path: Path) -> None:
    done = kiln(["cv", "edgnet", "--seeds", "0,1", "--no-register", *TINY_EDGNET, "--json"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert isinstance(json.loads(done.stdout), dict)
    assert "next: train longer" not in done.stderr  # folds print their address alone; cv's summary says what next
