"""The ASGI application: Replicate's API under `/v1` and at the root, output files, lifecycle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.routing import compile_path
from starlette.types import Scope

from modelyard.engine.catalog import Registered, register_catalog
from modelyard.engine.metrics import EngineMetrics
from modelyard.store.predictions import NewEvent
from modelyard.store.tables import Prediction

from . import errors
from .limits import BodyLimits
from .metrics import HttpMetrics
from .metrics import router as metrics_router
from .platform import Platform
from .ratelimit import RateLimiter, RateLimitMiddleware
from .refs import forget_versions
from .routes import (
    account,
    collections,
    delivery,
    deployments,
    models,
    predictions,
    streams,
    trainings,
    versions,
)
from .routes import files as files_routes
from .routes import usage as usage_routes

log = logging.getLogger("modelyard")
API_ROUTERS: list[APIRouter] = [predictions.router, streams.router, versions.router]
API_ROUTERS += [trainings.router, deployments.router]
API_ROUTERS += [files_routes.router]
API_ROUTERS += [models.router, collections.router, account.router, usage_routes.router]


def _report_catalog(task: asyncio.Task[Registered]) -> None:
    if task.cancelled():
        return
    if task.exception() is not None:
        log.error("registering the catalog failed", exc_info=task.exception())
        return
    done = task.result()
    log.warning("catalog: %d models registered%s", len(done.models),
                f"; skipped {done.skipped}" if done.skipped else "")  # fmt: skip


def create_app(platform: Platform) -> FastAPI:
    """The API over a built platform (see `modelyard.platform`, the composition root)."""
    settings, db = platform.settings, platform.db

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await platform.engine.start()
        if settings.catalog_dir is not None and settings.catalog_dir.is_dir():
            # In the background: the server answers at once; environments build on first use.
            catalog = asyncio.create_task(
                asyncio.to_thread(
                    register_catalog, platform.engine, db, settings.catalog_dir,
                    settings.catalog_owner,
                )
            )  # fmt: skip
            catalog.add_done_callback(_report_catalog)
            # Its versions are committed: a ref resolved meanwhile is resolved again.
            catalog.add_done_callback(lambda _: forget_versions(platform))
        try:
            yield
        finally:
            try:
                await platform.engine.stop()
            finally:
                await asyncio.to_thread(platform.writer.stop)
                db.dispose()

    app = FastAPI(
        title="Modelyard",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url="/v1/openapi.json",
        docs_url=None,  # web/api_docs.py serves /v1/docs with Swagger UI's files (no CDN)
        redoc_url=None,
    )
    app.state.platform = platform

    def trained(prediction: Prediction, events: list[NewEvent]) -> None:
        # A training's version is committed before its end: the destination's latest moved.
        if prediction.kind == "training" and any(event.type == "done" for event in events):
            forget_versions(platform)

    platform.engine.log.add_listener(trained)
    # Its own registry: several servers in one process (the tests) each report their own.
    app.state.metrics = metrics = EngineMetrics(platform.engine)
    errors.install(app)
    for router in API_ROUTERS:
        app.include_router(router, prefix="/v1")
    for router in API_ROUTERS:  # the v2 client's base URL has /v1 in it; ours may not
        app.include_router(router, include_in_schema=False)
    app.include_router(delivery.router)
    app.include_router(metrics_router)  # GET /metrics (loopback or an admin token: metrics.py)
    # Added first, so inside the rate limiter: a throttled caller's body is never read.
    app.add_middleware(BodyLimits, streamed=_streamed_routes())
    app.add_middleware(RateLimitMiddleware, limiter=RateLimiter(settings.rate_limits))
    app.add_middleware(HttpMetrics, metrics=metrics)  # outermost: refused requests count too
    return app


def _streamed_routes() -> Callable[[Scope], bool]:
    """Whether a request is for a route that streams its body to disk under its own limits
    (uploads and pushes): those bodies may be far larger than a JSON body. Each is mounted
    under `/v1` and at the root."""
    endpoints = (files_routes.create, versions.push)
    found = [
        (compile_path(prefix + route.path)[0], route.methods or set())
        for router in (files_routes.router, versions.router)
        for route in router.routes
        if isinstance(route, APIRoute) and route.endpoint in endpoints
        for prefix in ("/v1", "")
    ]
    assert len(found) == 2 * len(endpoints), "a streamed route was renamed"
    return lambda scope: any(
        scope["method"] in methods and pattern.match(scope["path"]) for pattern, methods in found
    )
