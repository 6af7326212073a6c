"""The pages a person opens in a browser: `/` to try the served models, `/docs` for the API, both offline.

    kiln serve --port 8080      # then open http://127.0.0.1:8080/ and http://127.0.0.1:8080/docs

`/` lists the served models (name, version, alias, task) and runs one on an uploaded image, drawing the answer
in the page: the mask over the image, the boxes with class names and confidences, the spectra as a plot; a
tabular model gets a form of its feature names. `/docs` is Swagger UI, vendored from npm's swagger-ui-dist
into serving/static/vendor/swagger-ui (Apache-2.0, LICENSE beside it), since FastAPI's default loads it from a
CDN and shows a blank page without internet. Both pages and their assets are open without the API token;
the page asks for the token when a call answers 401.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse, HTMLResponse

STATIC_DIR = Path(__file__).parents[1] / "static"  # serving/static: the try-it page and vendored Swagger UI
SWAGGER = "/static/vendor/swagger-ui"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def try_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{request.app.title} · API",
        swagger_js_url=f"{SWAGGER}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER}/swagger-ui.css",
        swagger_favicon_url=f"{SWAGGER}/favicon-32x32.png",
        oauth2_redirect_url=None,  # no route takes OAuth2; docs/hardening.md says the redirect page is gone
        swagger_ui_parameters={"tryItOutEnabled": True, "displayRequestDuration": True},
    )


def install_pages(app: FastAPI) -> None:
    """Mount `/`, `/docs` and the static assets; the app must be built with `docs_url=None, redoc_url=None`."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
