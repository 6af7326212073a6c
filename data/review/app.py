"""The review page and its JSON API: go through the queue, accept, fix or reject each image's pre-labels.

    kiln data review data/door --port 8765      # then open http://127.0.0.1:8765
    python -c "from data.review.app import create_app; app = create_app('data/door')"

Every asset is served from data/review/static (no CDN), so the page works with no internet. A save names the
revision it started from; a stale one gets 409 with a message and the page keeps the person's edits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import DatasetError
from data.loop import class_names
from data.review.store import ReviewStore, UnknownItem

STATIC_DIR = Path(__file__).parent / "static"


@dataclass(frozen=True)
class ReviewSettings:
    """`kiln data review` settings: KILN_REVIEW_<FIELD> variables, then the command's flags."""

    host: str = "127.0.0.1"  # bind address; 0.0.0.0 to let a team review from other machines
    port: int = 8765  # HTTP port
    access_log: bool = False  # uvicorn's line per request


def create_app(dst: str | Path) -> Any:
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles

    from core.http import install_error_handler

    store = ReviewStore(dst)
    store.sync_images()
    app = FastAPI(title="kiln review")
    app.state.store = store
    install_error_handler(app)
    app.include_router(_router(store))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _router(store: ReviewStore) -> Any:
    from fastapi import APIRouter, Body
    from fastapi.responses import FileResponse, JSONResponse

    router = APIRouter()
    no_cache = {"Cache-Control": "no-cache"}

    @router.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=no_cache)

    @router.get("/healthz")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/api/summary")
    def summary() -> dict[str, Any]:
        return {"folder": str(store.dst), "names": class_names(store.dst), "progress": store.progress()}

    @router.get("/api/queue")
    def queue(status: str | None = None) -> dict[str, Any]:
        return {"items": store.queue(status), "progress": store.progress()}

    @router.post("/api/sync")
    def sync() -> dict[str, Any]:
        return {"added": store.sync_images(), "progress": store.progress()}

    @router.get("/api/items/{path:path}/history")
    def history(path: str) -> dict[str, Any]:
        store.get(path)  # 404 for an unknown image
        return {"path": path, "history": store.history(path)}

    @router.get("/api/items/{path:path}")
    def item(path: str) -> JSONResponse:
        return JSONResponse(store.get(path), headers=no_cache)

    @router.put("/api/items/{path:path}")
    def save(path: str, body: Any = Body(...)) -> dict[str, Any]:  # noqa: B008 - FastAPI's idiom
        revision, verdict, boxes, reviewer = _save_body(body)
        return {**store.save(path, revision, verdict, boxes, reviewer), "progress": store.progress()}

    @router.get("/api/images/{path:path}")
    def image(path: str) -> FileResponse:
        store.get(path)  # only images in the queue are served: no path escapes the folder
        if not (store.dst / path).is_file():
            raise UnknownItem(f"{path} is no longer in {store.dst} (moved or deleted); its review is kept")
        return FileResponse(store.dst / path)

    return router


def _save_body(body: Any) -> tuple[int, str, list[Any], str | None]:
    if not isinstance(body, dict):
        raise DatasetError("the body must be a JSON object with revision, verdict and boxes", status_code=422)
    revision = body.get("revision")
    if isinstance(revision, bool) or not isinstance(revision, int):
        raise DatasetError(f"revision {revision!r} must be an integer", status_code=422, field="revision")
    verdict = body.get("verdict")
    if not isinstance(verdict, str):
        raise DatasetError(f"verdict {verdict!r} must be a string", status_code=422, field="verdict")
    boxes = body.get("boxes", [])
    if not isinstance(boxes, list):
        raise DatasetError(f"boxes must be a list, got {type(boxes).__name__}", status_code=422, field="boxes")
    reviewer = body.get("reviewer")
    return revision, verdict, boxes, reviewer if isinstance(reviewer, str) and reviewer else None
