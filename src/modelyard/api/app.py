"""The ASGI application: Replicate's API under `/v1` and at the root, output files, lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from modelyard.engine.engine import Engine
from modelyard.settings import Settings
from modelyard.store.blobs import BlobStore
from modelyard.store.database import Database

from . import errors
from .platform import Platform
from .ratelimit import RateLimiter, RateLimitMiddleware
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

API_ROUTERS: list[APIRouter] = [predictions.router, streams.router, versions.router]
API_ROUTERS += [trainings.router, deployments.router]
API_ROUTERS += [files_routes.router]
API_ROUTERS += [models.router, collections.router, account.router]


def create_app(settings: Settings) -> FastAPI:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    db.migrate()
    blobs = BlobStore(settings.blob_dir)
    platform = Platform(settings, db, blobs, Engine(settings, db, blobs))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await platform.engine.start()
        try:
            yield
        finally:
            await platform.engine.stop()
            db.dispose()

    app = FastAPI(
        title="Modelyard",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
    )
    app.state.platform = platform
    errors.install(app)
    app.add_middleware(RateLimitMiddleware, limiter=RateLimiter(settings.rate_limits))
    for router in API_ROUTERS:
        app.include_router(router, prefix="/v1")
    for router in API_ROUTERS:  # the v2 client's base URL has /v1 in it; ours may not
        app.include_router(router, include_in_schema=False)
    app.include_router(delivery.router)
    return app
