"""Mounts the pages and their static files on the server's app (after the API's routes, so
the API's paths win; usernames never take those names), and answers browsers that ask for a
page that does not exist with an HTML page instead of problem+json."""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from . import account, deployments, explore, model_page, owner, predictions, usage
from .api_docs import install_api_docs
from .context import HERE, error_page, viewer

TITLES = {404: "Page not found", 405: "Not allowed"}


def install(app: FastAPI) -> None:
    install_api_docs(app)  # before /static: its assets live under /static/swagger-ui
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    # owner's /{o} and model_page's /{o}/{n} last: every fixed path wins over a username
    for module in (explore, account, predictions, deployments, usage, owner, model_page):
        app.include_router(module.router)
    api_handler = app.exception_handlers[StarletteHTTPException]  # the API's problem+json

    async def page_or_problem(request: Request, exc: Any) -> Response:
        if "text/html" in request.headers.get("accept", "") and not request.url.path.startswith(
            "/v1/"
        ):
            title = TITLES.get(exc.status_code, "Something went wrong")
            detail = (
                f"There is nothing at {request.url.path}."
                if exc.status_code == 404
                else str(exc.detail)
            )
            return error_page(request, viewer(request), exc.status_code, title, detail)
        response = api_handler(request, exc)  # Starlette's handlers may be sync or async
        return await response if inspect.isawaitable(response) else response

    app.add_exception_handler(StarletteHTTPException, page_or_problem)
