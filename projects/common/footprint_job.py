"""A registered version's footprint (parameters, size, FLOPs, onnxruntime p50/p99), measured off the training
process's critical path.

    KILN_FOOTPRINT=off kiln train edgnet --set epochs=1            # measure nothing; `kiln leaderboard --measure` can
    python -m projects.common.footprint_job RUN_ID model.onnx      # what `after` starts, in a process of its own

`KILN_FOOTPRINT` says when the footprint is measured (serving/runtime/footprint.py):

- `after` (the default): registration writes the ONNX model to a temporary file and starts a detached process
  that measures it and logs the metrics to the run, then deletes the file. Training goes on at once: the 1-2 s of
  latency runs no longer hold up the end of a run, nor the next trial of a study.
- `inline`: measured in the registering process, before registration returns (as before; for tests that read the
  metrics right away).
- `off`: nothing is measured; `kiln leaderboard --measure` profiles the versions that have no footprint later.

Either way the run gets `footprint_seconds`, the wall time of the measurement, and a failed measurement tags the
run `kiln.footprint_error` instead of failing anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from core.errors import SettingsError
from core.scripts import script_args
from core.settings import read_env

WHEN = ("after", "inline", "off")
ROOT = Path(__file__).resolve().parents[2]  # the source tree, so that the detached process imports this checkout


@dataclass(frozen=True)
class FootprintSettings:
    footprint: str = "after"  # KILN_FOOTPRINT: after (a detached process), inline or off


def when() -> str:
    """The KILN_FOOTPRINT setting, checked."""
    value = read_env(FootprintSettings).footprint.strip().lower()
    if value not in WHEN:
        raise SettingsError(f"KILN_FOOTPRINT={value!r} is not one of {list(WHEN)}")
    return value


def measure_and_log(model: str | Path | onnx.ModelProto, run_id: str) -> float:
    """Measure `model` and log its footprint, and the seconds that took (`footprint_seconds`), to run `run_id`."""
    import mlflow

    from serving.runtime.footprint import profile_registered

    start = time.perf_counter()
    profile_registered(model, run_id)  # a model that cannot be profiled tags the run kiln.footprint_error
    seconds = time.perf_counter() - start
    mlflow.MlflowClient().log_metric(run_id, "footprint_seconds", seconds)
    return seconds


def footprint_later(proto: onnx.ModelProto, run_id: str) -> subprocess.Popen[bytes] | None:
    """The registration hook: measure the registered model's footprint as KILN_FOOTPRINT says. Returns the
    detached process (`after`), or None when the footprint was measured here (`inline`) or not at all (`off`)."""
    setting = when()
    if setting == "off":
        return None
    if setting == "inline":
        measure_and_log(proto, run_id)
        return None
    import mlflow

    folder = Path(tempfile.mkdtemp(prefix="kiln-footprint-"))
    path = folder / "model.onnx"
    path.write_bytes(proto.SerializeToString())
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(), "KILN_FOOTPRINT": "inline",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}  # fmt: skip
    env.pop("MLFLOW_RUN_ID", None)  # the job logs to run_id by name; it must not join a launcher's run
    with (folder / "footprint.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "projects.common.footprint_job", run_id, str(path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip


def main(argv: list[str]) -> None:
    usage = "python -m projects.common.footprint_job RUN_ID MODEL.onnx"
    run_id, path = script_args(argv, usage, __doc__, count=range(2, 3))
    try:
        seconds = measure_and_log(path, run_id)
        print(f"footprint of run {run_id} measured in {seconds:.2f} s", flush=True)
    finally:
        Path(path).unlink(missing_ok=True)  # the log stays next to it, for a failure's traceback


if __name__ == "__main__":
    main(sys.argv[1:])
