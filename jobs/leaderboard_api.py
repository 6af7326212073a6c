"""The efficiency leaderboard over HTTP, for the page's compare view: the same frontier as `kiln leaderboard`.

    curl -s 'localhost:9000/api/leaderboard?task=segmentation&max_params=10000'

    GET /api/leaderboard?task=&metric=&name=&max_params=&max_latency_ms=
        -> {"entries": [...], "frontier": ["name vN", ...], "budgets": [...], "unplaced": [...], "metric": ...}

Entries, frontier and budgets come from `efficiency.leaderboard` (collect, mark_frontier, budgets), so the page
and the CLI agree. No registered version is an empty board (200), not an error: the page says so. A bad query
value is a 422 naming the field. The footprint is only read here; `kiln leaderboard --measure` profiles.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from mlflow import MlflowClient

from core.contract import TASKS
from efficiency import leaderboard
from jobs import errors

MAX_TEXT = 200  # longest metric name or model glob accepted
# Declared in the OpenAPI document as _task and _budget check them (they give the 422s, naming the field).
TASK = "^ *(?:" + "|".join(TASKS) + ")? *$"  # one of core.contract's tasks, or blank for all
POSITIVE: dict[str, Any] = {"exclusiveMinimum": 0}


def _budget(value: float | None, field: str) -> float | None:
    """None, or a finite positive number (FastAPI's float parsing lets 'inf' and 'nan' through)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise errors.BadRequestField(f"{field} must be a finite number > 0, got {value!r}", field=field)
    return value


def _task(task: str | None) -> str | None:
    task = (task or "").strip() or None
    if task is not None and task not in TASKS:
        raise errors.BadRequestField(f"unknown task {task!r}; known: {list(TASKS)}", field="task")
    return task


def board_json(
    client: MlflowClient,
    *,
    task: str | None,
    metric: str | None,
    name: str | None,
    max_params: float | None,
    max_latency_ms: float | None,
) -> dict[str, Any]:
    """The leaderboard as JSON: every version, the frontier's labels, the best under each budget, the unplaced."""
    entries = leaderboard.collect(client, task=task, metric=metric, name=name)
    frontier = leaderboard.mark_frontier(entries)
    board = leaderboard.Leaderboard(entries, frontier, leaderboard.budgets(entries, max_params, max_latency_ms))
    data = board.to_json()
    data["unplaced"] = [e.label for e in entries if not e.complete]
    metrics = sorted({e.metric for e in entries if e.metric})
    data["metric"] = metric or (metrics[0] if len(metrics) == 1 else None)
    data["metrics"] = metrics
    return data


def leaderboard_router() -> APIRouter:
    router = APIRouter(prefix="/api")

    @router.get("/leaderboard")
    def get_leaderboard(
        request: Request,
        task: Annotated[str | None, Query(json_schema_extra={"pattern": TASK})] = None,
        metric: Annotated[str | None, Query(max_length=MAX_TEXT)] = None,
        name: Annotated[str | None, Query(max_length=MAX_TEXT)] = None,
        max_params: Annotated[float | None, Query(json_schema_extra=POSITIVE)] = None,
        max_latency_ms: Annotated[float | None, Query(json_schema_extra=POSITIVE)] = None,
    ) -> dict[str, Any]:
        """Registered versions on the Pareto frontier of metric, parameters and p50 latency; best under budget."""
        client = MlflowClient(request.app.state.settings.tracking_uri)
        return board_json(
            client,
            task=_task(task),
            metric=(metric or "").strip() or None,
            name=(name or "").strip() or None,
            max_params=_budget(max_params, "max_params"),
            max_latency_ms=_budget(max_latency_ms, "max_latency_ms"),
        )

    return router
