"""The API reference (`/v1/docs`): Swagger UI served from this server, not a CDN, so the footer's
"API reference" works on a machine without internet. The assets come from the
`swagger-ui-bundle-v2` package (Swagger UI 5, which reads FastAPI's OpenAPI 3.1)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

ASSETS = "/static/swagger-ui"


def install_api_docs(app: FastAPI) -> None:
    """Mount Swagger UI's files and answer `/v1/docs` with a page that loads only those."""
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    @app.get("/v1/docs", include_in_schema=False)
    def api_docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/v1/openapi.json",
            title=f"{app.title} API reference",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )
