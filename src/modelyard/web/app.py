"""Mounts the pages and their static files on the server's app (after the API's routes, so
the API's paths win; usernames never take those names)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from . import account, explore, model_page, predictions
from .context import HERE


def install(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in (explore, account, predictions, model_page):  # model_page's /{o}/{n} last
        app.include_router(module.router)
