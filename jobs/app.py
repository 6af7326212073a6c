"""The job service: a REST API that starts, lists, follows and cancels `mlflow run` jobs, and the page at `/`.

    kiln jobs serve --port 9000
    curl -s -X POST localhost:9000/api/training/start -H 'Content-Type: application/json' \\
         -d '{"entry_point": "edgnet_large", "params": {"epochs": 100, "batch_size": 8}}'

Routes (all under /api need `Authorization: Bearer $KILN_API_TOKEN` when that variable is set):
    GET  /api/entry-points                  entry points and typed params from the MLproject
    POST /api/training/start                {"entry_point", "params", "experiment_name"?} -> 202 + job
    GET  /api/training/list                 jobs, newest first (?status=running,queued&limit=50)
    GET  /api/training/{id}                 status, run id, progress, latest metrics, times, error
    GET  /api/training/{id}/logs            the log so far as text (?tail=200)
    GET  /api/training/{id}/logs/stream     the log as server-sent events, following new lines
    GET  /api/training/{id}/metrics         metric curves of the job's run
    GET  /api/training/{id}/preview         the run's newest prediction picture (PNG or JPEG)
    POST /api/training/{id}/cancel          stop the job's process group; its MLflow run becomes KILLED
    DELETE /api/training/{id}               forget a finished job and its log (the MLflow run stays)
    GET  /api/runs, /api/runs/{id}/metrics  recent MLflow runs and their curves, for the compare view
    GET  /api/models, POST /api/models/{name}/promote|rollback   the registry (see jobs.models_api)
    GET  /api/leaderboard                   the efficiency frontier and best under budget (jobs.leaderboard_api)
"""

from __future__ import annotations

import asyncio
import hmac
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from jobs import errors, logs, openapi
from jobs.progress import SYSTEM_PREFIX
from jobs.runner import JobRunner
from jobs.runs import JOB_ID_TAG
from jobs.settings import Settings
from jobs.store import RUNNING, STATUSES
from jobs.views import JobViews, iso, latest_preview
from registry.names import EXPERIMENT_PATTERN

STATIC_DIR = Path(__file__).parent / "static"
# Declared in the OpenAPI document as the handlers check them: `status` of the job list is a comma-separated list
# of job statuses, blanks around and between ignored (_statuses gives the 422 naming the field); a run id is one
# MLflow accepts (ASCII here).
_ONE_STATUS = "(?:" + "|".join(STATUSES) + ")"
STATUS_LIST = f"^(?: *{_ONE_STATUS}? *,)* *{_ONE_STATUS}? *$"
RUN_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,255}$"
SSE_POLL_SECONDS = 0.25  # how often a log stream looks for new lines
MAX_LOG_OFFSET = 2**53  # ?offset= above this is no byte offset of any log (and would overflow a file seek)
SSE_KEEPALIVE_SECONDS = 15.0  # a comment line this often keeps proxies from closing an idle stream


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entry_point: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    # None: KILN_JOBS_EXPERIMENT, else MLflow's default experiment. registry/names.py's pattern, checked here too, so
    # that estimate (which ignores the name) refuses what the document refuses; registry.names also refuses a trailing
    # space, which no portable pattern says.
    experiment_name: Annotated[str, Field(pattern=f"^{EXPERIMENT_PATTERN}$")] | None = None


def require_token(request: Request) -> None:
    token: str | None = request.app.state.settings.api_token
    if token is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise errors.Unauthorized("missing bearer token: send 'Authorization: Bearer <KILN_API_TOKEN>'")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise errors.Unauthorized("wrong bearer token")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    runner = JobRunner(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner.start()
        try:
            yield
        finally:
            runner.stop()

    # ReDoc loads from a CDN, and no route takes OAuth2: /docs only, without /docs/oauth2-redirect
    app = FastAPI(title="kiln jobs", lifespan=lifespan, redoc_url=None, swagger_ui_oauth2_redirect_url=None)
    app.state.settings = settings
    app.state.runner = runner
    app.state.views = JobViews(runner, settings)
    errors.install(app)
    openapi.install(app)  # every error status with its real body; 405 with the path's whole Allow
    app.include_router(public_router())
    app.include_router(training_router(), dependencies=[Depends(require_token)])
    app.include_router(runs_router(), dependencies=[Depends(require_token)])
    from jobs.models_api import models_router

    app.include_router(models_router(), dependencies=[Depends(require_token)])
    from jobs.leaderboard_api import leaderboard_router

    app.include_router(leaderboard_router(), dependencies=[Depends(require_token)])
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def public_router() -> APIRouter:
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @router.get("/healthz")
    def health(request: Request) -> JSONResponse:
        """200 while the supervisor works; 503 naming its last failure (tracking store unreachable, disk full)."""
        error = request.app.state.runner.supervisor_error
        if error is None:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "degraded", "detail": f"job supervisor failing: {error}"}, status_code=503)

    @router.get("/api/config")
    def config(request: Request) -> dict[str, Any]:
        """What the page needs before it has a token: whether to ask for one, and where the MLflow UI is."""
        s: Settings = request.app.state.settings
        return {
            "auth_required": s.api_token is not None,
            "mlflow_ui_url": s.mlflow_ui_url,
            "mlflow_runs_url": request.app.state.views.runs_table_url(),  # the runs table, model-training view
            "max_concurrent_jobs": s.max_concurrent_jobs,
        }

    return router


def training_router() -> APIRouter:
    router = APIRouter(prefix="/api")

    @router.get("/entry-points")
    def entry_points(request: Request) -> dict[str, Any]:
        eps = request.app.state.runner.mlproject.entry_points()
        return {
            "mlproject": str(request.app.state.runner.mlproject.path),
            "entry_points": [e.as_json() for e in eps.values()],
        }

    @router.post("/training/estimate")
    def estimate(body: StartRequest, request: Request) -> dict[str, Any]:
        """Before Start: the expected training time from earlier runs of the entry point, and a quick preset."""
        from jobs.estimate import estimate as run_estimate

        runner = request.app.state.runner
        entry = runner.mlproject.entry_points().get(body.entry_point)
        if entry is None:
            raise errors.BadRequestField(f"unknown entry point {body.entry_point!r}", field="entry_point")
        s: Settings = request.app.state.settings
        return run_estimate(entry, body.params, s.tracking_uri, runner.mlproject.path.parent)

    @router.post("/training/start", status_code=202)
    def start(body: StartRequest, request: Request) -> dict[str, Any]:
        job = request.app.state.runner.submit(body.entry_point, body.params, body.experiment_name)
        return dict(request.app.state.views.as_json(job))

    @router.get("/training/list")
    def list_jobs(
        request: Request,
        status: Annotated[str | None, Query(json_schema_extra={"pattern": STATUS_LIST})] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> dict[str, Any]:
        wanted = _statuses(status)
        jobs = request.app.state.runner.store.list_jobs(wanted, limit=limit)
        return {"jobs": [request.app.state.views.as_json(j) for j in jobs]}

    @router.get("/training/{job_id}")
    def get_job(job_id: str, request: Request) -> dict[str, Any]:
        job = request.app.state.runner.store.get(job_id)
        return dict(request.app.state.views.as_json(job, detail=True))

    @router.get("/training/{job_id}/preview")
    def preview(job_id: str, request: Request) -> Response:
        """The run's newest prediction picture (overlay, predicted boxes, spectra plot); 404 until there is one."""
        runner = request.app.state.runner
        job = runner.store.get(job_id)
        run_id = runner.training_run(job) if job.run_id else None
        path = latest_preview(runner.reader.client, run_id, job.status != RUNNING) if run_id else None
        if path is None:
            raise errors.NotFound(f"job {job_id!r} has logged no prediction picture yet")
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(runner.reader.client.download_artifacts(run_id, path, tmp))
            content = local.read_bytes()
        media = "image/png" if path.endswith(".png") else "image/jpeg"
        return Response(content, media_type=media, headers={"X-Kiln-Artifact": path, "Cache-Control": "no-cache"})

    @router.post("/training/{job_id}/cancel")
    def cancel(job_id: str, request: Request) -> dict[str, Any]:
        job = request.app.state.runner.cancel(job_id)
        return dict(request.app.state.views.as_json(job))

    @router.delete("/training/{job_id}")
    def remove(job_id: str, request: Request) -> dict[str, Any]:
        job = request.app.state.runner.remove(job_id)
        return {"job_id": job.id, "removed": True, "run_id": job.run_id}

    @router.get("/training/{job_id}/logs", response_class=PlainTextResponse)
    def job_logs(job_id: str, request: Request, tail: Annotated[int | None, Query(ge=0)] = None) -> str:
        job = request.app.state.runner.store.get(job_id)
        return logs.read_all(Path(job.log_path), tail=tail)

    @router.get("/training/{job_id}/logs/stream")
    def stream_logs(
        job_id: str, request: Request, offset: Annotated[int, Query(ge=0, le=MAX_LOG_OFFSET)] = 0
    ) -> StreamingResponse:
        job = request.app.state.runner.store.get(job_id)
        resume = request.headers.get("last-event-id", "").strip()
        start = _log_offset(resume, "Last-Event-ID", Path(job.log_path)) if resume else offset
        if not resume:
            _log_offset(str(offset), "offset", Path(job.log_path))
        return StreamingResponse(
            _log_events(request, job.id, Path(job.log_path), start),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.get("/training/{job_id}/metrics")
    def job_metrics(job_id: str, request: Request) -> dict[str, Any]:
        job = request.app.state.runner.store.get(job_id)
        if job.run_id is None:
            return {"run_id": None, "metrics": {}}
        run_id = request.app.state.runner.training_run(job)
        curves = request.app.state.runner.reader.curves(run_id)
        return {"run_id": run_id, "metrics": {k: c.as_json() for k, c in curves.items()}}

    @router.get("/training/{job_id}/advice")
    def job_advice(job_id: str, request: Request) -> dict[str, Any]:
        """`kiln advise` on the job's run, computed on request (nothing is written to the run)."""
        from experiments.advise import advise

        job = request.app.state.runner.store.get(job_id)
        if job.run_id is None:
            return {"run_id": None, "advice": None}
        run_id = request.app.state.runner.training_run(job)
        return {"run_id": run_id, "advice": advise(run_id, client=request.app.state.runner.reader.client).to_json()}

    return router


def _log_offset(text: str, field: str, log: Path) -> int:
    """A byte offset into the job's log that this stream could have given out (an event id): 0 to its size."""
    size = log.stat().st_size if log.exists() else 0
    if not text.isdigit() or len(text) > 18 or int(text) > size:
        raise errors.BadRequestField(f"{field} {text[:40]!r} is not an offset of this log (0 to {size})", field=field)
    return int(text)


def _statuses(text: str | None) -> tuple[str, ...]:
    if not text:
        return STATUSES
    wanted = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in wanted if s not in STATUSES]
    if bad:
        raise errors.BadRequestField(f"unknown status {bad[0]!r}; known: {list(STATUSES)}", field="status")
    return wanted


async def _log_events(request: Request, job_id: str, path: Path, offset: int) -> AsyncIterator[str]:
    """Server-sent events: one event per batch of new lines (a `data:` line each, `id:` = byte offset after
    them, so a reconnecting EventSource resumes), then `event: end` with the job's status once it is over."""
    store = request.app.state.runner.store
    idle = 0.0
    while not await request.is_disconnected():
        terminal = store.get(job_id).terminal  # read before the file, so no line written before the end is lost
        lines, offset = logs.read_text(path, offset, final=terminal)
        if lines:
            idle = 0.0
            yield f"id: {offset}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"
        elif terminal:
            yield f"event: end\ndata: {store.get(job_id).status}\n\n"
            return
        else:
            idle += SSE_POLL_SECONDS
            if idle >= SSE_KEEPALIVE_SECONDS:
                idle = 0.0
                yield ": keep-alive\n\n"
        await asyncio.sleep(SSE_POLL_SECONDS if not lines else 0)


def runs_router() -> APIRouter:
    router = APIRouter(prefix="/api")

    @router.get("/runs")
    def runs(request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        """Recent runs of every experiment, newest first, with the names of their training metrics."""
        client = request.app.state.runner.reader.client
        experiments = {e.experiment_id: e.name for e in client.search_experiments()}
        found = client.search_runs(list(experiments), order_by=["attributes.start_time DESC"], max_results=limit)
        return {"runs": [_run_json(r, experiments, request.app.state.views) for r in found]}

    @router.get("/runs/{run_id}/metrics")
    def run_metrics(
        run_id: Annotated[str, PathParam(pattern=RUN_ID)], request: Request, system: bool = False
    ) -> dict[str, Any]:
        curves = request.app.state.runner.reader.curves(run_id, include_system=system)
        return {"run_id": run_id, "metrics": {k: c.as_json() for k, c in curves.items()}}

    return router


def _run_json(run: Any, experiments: dict[str, str], views: JobViews) -> dict[str, Any]:
    info, data = run.info, run.data
    return {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "experiment_name": experiments.get(info.experiment_id),
        "status": info.status,
        "start_time": iso(info.start_time / 1000) if info.start_time else None,
        "entry_point": data.tags.get("mlflow.project.entryPoint"),
        "job_id": data.tags.get(JOB_ID_TAG),
        "metrics": sorted(k for k in data.metrics if not k.startswith(SYSTEM_PREFIX)),
        "mlflow_url": views.run_url(info.experiment_id, info.run_id),
    }
