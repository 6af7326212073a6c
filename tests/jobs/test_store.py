"""The sqlite jobs table: round trips, ordering, guarded updates.

.venv/bin/python -m pytest tests/jobs/test_store.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.store import COMPLETED, QUEUED, RUNNING, Job, JobNotFoundError, JobStore


def job(job_id: str, created: float, status: str = QUEUED) -> Job:
    return Job(id=job_id, entry_point="tiny", params={"epochs": "3"}, status=status, created_at=created, log_path="x")


def test_round_trip_and_survives_reopening(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    store.insert(job("a", 1.0))
    store.update("a", status=RUNNING, run_id="r1", metrics={"val_iou": 0.5}, current_epoch=2)
    store.close()
    again = JobStore(tmp_path / "jobs.db").get("a")
    assert (again.status, again.run_id, again.metrics, again.current_epoch) == (RUNNING, "r1", {"val_iou": 0.5}, 2)
    assert again.params == {"epochs": "3"}


def test_list_is_newest_first_and_queue_oldest_first(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    for name, created in [("b", 2.0), ("a", 1.0), ("c", 3.0)]:
        store.insert(job(name, created))
    store.update("c", status=RUNNING)
    assert [j.id for j in store.list_jobs()] == ["c", "b", "a"]
    assert [j.id for j in store.queued()] == ["a", "b"]
    assert [j.id for j in store.list_jobs((RUNNING,))] == ["c"]


def test_guarded_update_leaves_a_finished_job_alone(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    store.insert(job("a", 1.0, status=COMPLETED))
    store.update("a", current_epoch=10)
    assert store.update("a", only_status=RUNNING, current_epoch=3).current_epoch == 10


def test_unknown_job_and_column_are_named(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    with pytest.raises(JobNotFoundError, match="no job 'zzz'"):
        store.get("zzz")
    store.insert(job("a", 1.0))
    with pytest.raises(ValueError, match="no job column"):
        store.update("a", colour="red")
