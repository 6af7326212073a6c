"""Starts, queues, watches and cancels `mlflow run` jobs, each in its own process group, logging to a file.

    python -m jobs.runner edgnet epochs=2 img_size=64     # runs one job in the foreground, printing its log path

A start request becomes a queued row at once. A supervisor thread launches queued jobs while fewer than
`max_concurrent_jobs` run, reaps finished ones, and closes their MLflow runs. Each job is

    python -m mlflow run <project> -e <entry point> --env-manager local --experiment-id E --run-id R -P k=v ...

built as an argv list (no shell), started with `start_new_session=True` so that the job and everything it
spawns form one process group: cancel signals the whole group, and stopping the service leaves jobs running.
A restarted service adopts jobs whose processes are still alive and marks the others failed, with the reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import psutil
from mlflow.exceptions import MlflowException

from jobs import logs
from jobs.mlproject import MLproject, ParamError
from jobs.progress import Progress, RunReader
from jobs.runs import JobRuns
from jobs.settings import Settings
from jobs.store import CANCELLED, COMPLETED, FAILED, QUEUED, RUNNING, Job, JobStore

# Params whose value is the number of steps a run logs its per-step metrics at: epochs, or boosting rounds (skinmodel
# logs XGBoost's eval metrics with step=round).
TOTAL_PARAMS = ("epochs", "n_estimators")
# Variables that must not leak from the service into a job: the job gets its run and experiment explicitly.
_DROPPED_ENV = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "KILN_API_TOKEN")


def check_names(params: Mapping[str, Any], experiment_name: str | None) -> None:
    """A `model_name` param or experiment name the registry would refuse (registry.names): refuse it at start."""
    from registry.errors import InvalidRequestError
    from registry.names import check_experiment_name, check_model_name

    try:
        if params.get("model_name"):  # "" keeps the family's own name
            check_model_name(params["model_name"])
    except InvalidRequestError as err:
        raise ParamError(err.message, "params.model_name") from None
    try:
        if experiment_name is not None:
            check_experiment_name(experiment_name)
    except InvalidRequestError as err:
        raise ParamError(err.message, "experiment_name") from None


class JobStateError(Exception):
    """An action the job's state does not allow (cancelling a finished job)."""


class ServiceLockedError(RuntimeError):
    """Another job service already supervises this jobs table; two would start every queued job twice."""


def _exclusive_lock(jobs_db: Path) -> TextIO:
    path = jobs_db.with_name(jobs_db.name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise ServiceLockedError(f"another kiln jobs service (pid {holder}) already supervises {jobs_db}") from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class JobRunner:
    def __init__(self, settings: Settings, store: JobStore | None = None) -> None:
        self.settings = settings
        self._service_lock: TextIO | None = _exclusive_lock(settings.jobs_db)
        self.store = store or JobStore(settings.jobs_db)
        self.mlproject = MLproject(settings.project_dir, settings.file_roots)
        self.runs = JobRuns(settings.tracking_uri, settings.project_dir)
        self.reader = RunReader(settings.tracking_uri)
        settings.logs_dir.mkdir(parents=True, exist_ok=True)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}  # jobs this service started; others are adopted
        self._cancelling: set[str] = set()
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.supervisor_error: str | None = None  # the last tick's failure (tracking store down, disk full)

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Reconcile jobs left by an earlier service, then supervise in a background thread."""
        self.reconcile()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="kiln-jobs-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop supervising. Running jobs keep running; the next service adopts them."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._service_lock is not None:
            self._service_lock.close()  # closing the file drops the flock
            self._service_lock = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
                self.supervisor_error = None
            except Exception as exc:  # noqa: BLE001 - the supervisor must outlive one bad tick; /healthz reports it
                self.supervisor_error = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            self._wake.wait(self.settings.poll_seconds)
            self._wake.clear()

    def tick(self) -> None:
        with self._lock:
            for job in self.store.list_jobs((RUNNING,), limit=10_000):
                if job.id not in self._cancelling and not self._alive(job):
                    self._finish_exited(job)
            self._launch_queued()

    # ---- requests ---------------------------------------------------------------------------------------------
    def submit(self, entry_point: str, params: Mapping[str, Any], experiment_name: str | None = None) -> Job:
        """Validate against the MLproject (raises ParamError) and queue; the supervisor starts it within a poll."""
        argv_params = self.mlproject.validate(entry_point, params)
        check_names(argv_params, experiment_name)
        job_id = f"{re.sub(r'[^A-Za-z0-9_.-]', '_', entry_point)}-{secrets.token_hex(4)}"
        job = Job(
            id=job_id,
            entry_point=entry_point,
            params=argv_params,
            status=QUEUED,
            created_at=time.time(),
            log_path=str(self.settings.logs_dir / f"{job_id}.log"),
            experiment_name=experiment_name or self.settings.experiment_name,
            total_epochs=self._total_epochs(entry_point, argv_params),
        )
        self.store.insert(job)
        self._wake.set()
        return job

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job, or stop a running job's whole process group and mark its MLflow run KILLED."""
        with self._lock:
            job = self.store.get(job_id)
            if job.terminal:
                raise JobStateError(f"job {job_id!r} is already {job.status}; only queued or running jobs can cancel")
            if job.status == QUEUED:
                return self.store.update(job_id, status=CANCELLED, finished_at=time.time(), error="cancelled in queue")
            self._cancelling.add(job_id)
        try:
            survivors = self._stop_group(job)
            return self._finish_cancelled(job, survivors)
        finally:
            with self._lock:
                self._cancelling.discard(job_id)
            self._wake.set()

    def remove(self, job_id: str) -> Job:
        """Forget a finished job and delete its log; its MLflow run stays."""
        with self._lock:
            job = self.store.get(job_id)
            if not job.terminal:
                raise JobStateError(f"job {job_id!r} is {job.status}; cancel it before removing it")
            self.store.delete(job_id)
        Path(job.log_path).unlink(missing_ok=True)
        return job

    def queue_position(self, job: Job) -> int | None:
        if job.status != QUEUED:
            return None
        return [j.id for j in self.store.queued()].index(job.id) + 1

    # ---- launching --------------------------------------------------------------------------------------------
    def _launch_queued(self) -> None:
        free = self.settings.max_concurrent_jobs - len(self.store.list_jobs((RUNNING,), limit=10_000))
        for job in self.store.queued()[: max(free, 0)]:
            self._launch(job)

    def _launch(self, job: Job) -> None:
        try:
            experiment_id = self.runs.experiment_id(job.experiment_name)
            run_id = self.runs.create(job.id, job.entry_point, experiment_id)
        except MlflowException as exc:
            self._fail_before_start(job, f"could not create the MLflow run: {exc.message}")
            return
        argv = self.argv(job, experiment_id, run_id)
        try:
            proc = self._spawn(argv, Path(job.log_path))
        except OSError as exc:
            error = f"could not start {shlex.join(argv[:4])}: {exc}"
            self._fail_before_start(job, _join(error, self._close_run(run_id, "FAILED")) or error, run_id=run_id)
            return
        self._procs[job.id] = proc
        self.store.update(
            job.id,
            status=RUNNING,
            run_id=run_id,
            experiment_id=experiment_id,
            pid=proc.pid,
            pid_started_at=_create_time(proc.pid),
            started_at=time.time(),
        )

    def _spawn(self, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            log.write(f"$ {shlex.join(argv)}\n".encode())
            log.flush()
            return subprocess.Popen(
                argv,
                cwd=self.settings.project_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: cancel signals all of it, Ctrl-C of the service none
                env=self.job_env(),
            )

    def argv(self, job: Job, experiment_id: str, run_id: str) -> list[str]:
        cmd = [sys.executable, "-m", "mlflow", "run", str(self.settings.project_dir), "-e", job.entry_point]
        if self.settings.backend_config is not None:  # SageMaker: MLflow passes --run-id to local runs only
            cmd += ["--backend", "sagemaker", "--backend-config", str(self._backend_config(job, run_id))]
        else:
            cmd += ["--env-manager", "local"]
        cmd += ["--experiment-id", experiment_id, "--run-id", run_id]
        for name, value in job.params.items():
            cmd += ["-P", f"{name}={value}"]
        return cmd

    def _backend_config(self, job: Job, run_id: str) -> Path:
        """The service's backend config plus the run this job reports into, beside the job's log."""
        assert self.settings.backend_config is not None
        config = json.loads(self.settings.backend_config.read_text())
        path = Path(job.log_path).with_suffix(".backend.json")
        path.write_text(json.dumps({**config, "run_id": run_id}))
        return path

    def job_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
        # The entry point commands say `python`: make that the service's interpreter even when the venv is not
        # activated (`.venv/bin/kiln jobs serve`).
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.update(
            MLFLOW_TRACKING_URI=self.settings.tracking_uri, MLFLOW_DISABLE_TELEMETRY="true", PYTHONUNBUFFERED="1"
        )
        return env

    def _total_epochs(self, entry_point: str, params: Mapping[str, str]) -> int | None:
        """The first of TOTAL_PARAMS the entry point has, given or default; None when it has none or it is empty."""
        ep = self.mlproject.get(entry_point)
        name = next((n for n in TOTAL_PARAMS if n in ep.params), None)
        if name is None:
            return None
        value = params.get(name, ep.params[name].default)
        try:
            return int(float(value))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None

    def _fail_before_start(self, job: Job, error: str, run_id: str | None = None) -> None:
        with contextlib.suppress(OSError), Path(job.log_path).open("a") as log:
            log.write(f"kiln: {error}\n")  # best effort: the job row below carries the error either way
        self.store.update(job.id, status=FAILED, error=error, run_id=run_id, finished_at=time.time())

    # ---- watching ---------------------------------------------------------------------------------------------
    def _alive(self, job: Job) -> bool:
        proc = self._procs.get(job.id)
        if proc is not None:
            return proc.poll() is None
        return _same_process_alive(job.pid, job.pid_started_at)

    def _finish_exited(self, job: Job) -> None:
        proc = self._procs.pop(job.id, None)
        if job.pid is not None:  # stragglers (data loader workers) once `mlflow run` is gone
            _signal_until_gone(job.pid, job.pid_started_at or 0.0, proc, signal.SIGKILL, 5.0)
        run_id = self.training_run(job)
        if proc is not None:
            status, error, run_status = _outcome_from_exit(proc.returncode, Path(job.log_path))
        else:
            status, error, run_status = self._outcome_from_run(job, run_id, "while the service watched it")
        error = _join(error, self._close_run(run_id, run_status))
        self._finalize(job, status=status, error=error, run_id=run_id, exit_code=proc.returncode if proc else None)

    def _outcome_from_run(self, job: Job, run_id: str | None, when: str) -> tuple[str, str | None, str]:
        """For a job whose exit code nobody saw (started by an earlier service): judge by its MLflow run."""
        status = self._run_status(run_id)
        cause = logs.last_error(Path(job.log_path))
        if status == "FINISHED":
            return COMPLETED, None, "FINISHED"
        if status == "KILLED":
            return CANCELLED, "its MLflow run was marked KILLED outside the job service", "KILLED"
        if status == "FAILED":
            return FAILED, "training failed" + (f": {cause}" if cause else " (MLflow run FAILED)"), "FAILED"
        reason = f"process group {job.pid} vanished {when} without closing its MLflow run (killed, or host restarted)"
        return FAILED, reason + (f"; last error in the log: {cause}" if cause else ""), "FAILED"

    def reconcile(self) -> None:
        """On start-up: adopt running jobs whose process is alive, finish the ones whose process vanished."""
        with self._lock:
            for job in self.store.list_jobs((RUNNING,), limit=10_000):
                if job.id in self._procs or _same_process_alive(job.pid, job.pid_started_at):
                    continue
                run_id = self.training_run(job)
                status, error, run_status = self._outcome_from_run(job, run_id, "while the service was down")
                error = _join(error, self._close_run(run_id, run_status))
                self._finalize(job, status=status, error=error, run_id=run_id, exit_code=None)

    # ---- cancelling -------------------------------------------------------------------------------------------
    def _stop_group(self, job: Job) -> list[int]:
        """SIGTERM every process of the job's group, SIGKILL what is left after the grace period.

        Returns the pids that outlived both. Processes are picked by group id and by having started no
        earlier than the job's leader, so a pid reused by an unrelated process is never signalled.
        """
        if job.pid is None:
            return []
        proc = self._procs.get(job.id)
        since = job.pid_started_at or 0.0
        if _signal_until_gone(job.pid, since, proc, signal.SIGTERM, self.settings.cancel_grace_seconds):
            return []
        _signal_until_gone(job.pid, since, proc, signal.SIGKILL, 10.0)
        return [p.pid for p in _group_members(job.pid, since)]

    def _finish_cancelled(self, job: Job, survivors: list[int]) -> Job:
        with self._lock:
            proc = self._procs.pop(job.id, None)
            run_id = self.training_run(job)
            stuck = f"pids {survivors} ignored SIGKILL (uninterruptible sleep?)" if survivors else None
            error = _join("cancelled by request", self._close_run(run_id, "KILLED", only_if_running=False), stuck)
            return self._finalize(
                job, status=CANCELLED, error=error, run_id=run_id, exit_code=proc.returncode if proc else None
            )

    # ---- MLflow bookkeeping -----------------------------------------------------------------------------------
    def training_run(self, job: Job) -> str | None:
        """The run the job trains in: its own, or the one it resumed (only a `resume` param can change it)."""
        if job.run_id is None or not job.params.get("resume"):
            return job.run_id
        try:
            return self.runs.training_run(job.run_id)
        except MlflowException:
            return job.run_id

    def _run_status(self, run_id: str | None) -> str | None:
        if run_id is None:
            return None
        try:
            return self.runs.status(run_id)
        except MlflowException:
            return None

    def _close_run(self, run_id: str | None, status: str, only_if_running: bool = True) -> str | None:
        """Mark the run ended; returns a sentence for the job's error when the tracking store refused."""
        if run_id is None:
            return None
        try:
            self.runs.close(run_id, status, only_if_running=only_if_running)
        except MlflowException as exc:
            return f"could not mark MLflow run {run_id} {status}: {exc.message}"
        return None

    def _finalize(self, job: Job, *, status: str, error: str | None, run_id: str | None, exit_code: int | None) -> Job:
        """Record the end of a job with a last snapshot of its progress, so finished jobs need no MLflow reads."""
        changes: dict[str, Any] = {"status": status, "error": error, "run_id": run_id, "exit_code": exit_code}
        changes["finished_at"] = time.time()
        snapshot = self.snapshot(job.total_epochs, run_id)
        if snapshot is not None:
            changes.update(current_epoch=snapshot.current_epoch, total_epochs=snapshot.total_epochs)
            changes["metrics"] = snapshot.metrics
        return self.store.update(job.id, **changes)

    def snapshot(self, total_epochs: int | None, run_id: str | None) -> Progress | None:
        if run_id is None:
            return None
        try:
            return self.reader.progress(run_id, total_epochs, max_age=0.0)
        except MlflowException:
            return None


def _join(*parts: str | None) -> str | None:
    return "; ".join(part for part in parts if part) or None


def _outcome_from_exit(returncode: int, log_path: Path) -> tuple[str, str | None, str]:
    if returncode == 0:
        return COMPLETED, None, "FINISHED"
    how = f"killed by {_signal_name(-returncode)}" if returncode < 0 else f"exited with code {returncode}"
    cause = logs.last_error(log_path)
    return FAILED, f"mlflow run {how}" + (f": {cause}" if cause else ""), "FAILED"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _same_process_alive(pid: int | None, started_at: float | None) -> bool:
    """True when `pid` runs and is the process we started (not a later one that reused the number)."""
    if pid is None:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started_at is None or abs(proc.create_time() - started_at) < 1.0
    except psutil.Error:
        return False


def _group_members(pgid: int, since: float) -> list[psutil.Process]:
    """Live processes of group `pgid` started at or after `since` (unix seconds)."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) != pgid or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.create_time() >= since - 1.0:
                members.append(proc)
        except (OSError, psutil.Error):
            continue
    return members


def _signal_until_gone(
    pgid: int, since: float, leader: subprocess.Popen[bytes] | None, sig: signal.Signals, timeout: float
) -> bool:
    """Send `sig` once to each member of the group (including ones spawned meanwhile) until none is left."""
    signalled: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        if leader is not None:
            leader.poll()  # reap the leader so it does not linger as a zombie
        members = _group_members(pgid, since)
        if not members:
            return True
        if time.monotonic() >= deadline:
            return False
        for member in members:
            if member.pid not in signalled:
                signalled.add(member.pid)
                with contextlib.suppress(psutil.Error):
                    member.send_signal(sig)
        time.sleep(0.1)


def main(argv: list[str]) -> None:
    settings = Settings.from_env()
    runner = JobRunner(settings)
    params = dict(item.split("=", 1) for item in argv[1:])
    job = runner.submit(argv[0], params)
    print(f"job {job.id}: log {job.log_path}")
    runner.start()
    try:
        while not runner.store.get(job.id).terminal:
            time.sleep(1)
    except KeyboardInterrupt:
        runner.cancel(job.id)
    finally:
        runner.stop()
    final = runner.store.get(job.id)
    print(f"job {job.id}: {final.status} run {final.run_id} {final.error or ''}")


if __name__ == "__main__":
    from core.scripts import script_args

    main(script_args(sys.argv[1:], "python -m jobs.runner ENTRY_POINT [NAME=VALUE ...]", __doc__, range(1, 1000)))
