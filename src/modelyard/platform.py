"""The composition root: builds the platform (database, writer, blobs, files, backend, engine)
and its web application, for `modelyard serve` and for tests. Nothing else wires these."""

from __future__ import annotations

from fastapi import FastAPI

from modelyard.api.app import create_app
from modelyard.api.platform import Platform
from modelyard.billing.hardware import load_hardware
from modelyard.engine.backend import Backend
from modelyard.engine.engine import Engine
from modelyard.engine.files import FileService
from modelyard.engine.gpus import GpuInventory
from modelyard.engine.local_backend import LocalBackend
from modelyard.engine.urls import Urls
from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.settings import Settings
from modelyard.store.blobs import open_blob_store
from modelyard.store.database import Database
from modelyard.store.writer import Writer
from modelyard.web.app import install as install_web


def build_platform(settings: Settings, *, backend: Backend | None = None) -> Platform:
    """Everything one server process needs, migrated and ready for `engine.start()`."""
    hardware = load_hardware(settings.hardware_file)  # first: a bad file opens nothing
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    db.migrate()
    blobs = open_blob_store(settings.storage_url, settings.blob_dir)
    writer = Writer(db)
    files = FileService(settings, db, blobs, Urls(settings.public_url))
    if backend is None and settings.backend == "ray":
        backend = ray_backend(settings)
    if backend is None:
        gpus = GpuInventory.from_settings(settings)  # --gpus, else nvidia-smi
        backend = LocalBackend(EnvironmentBuilder(), files.http_client(), gpus, blobs)
    engine = Engine(settings, db, writer, blobs, files, backend, hardware=hardware)
    return Platform(settings, db, blobs, engine, writer)


def ray_backend(settings: Settings) -> Backend:
    """The Ray backend, joined to `settings.ray_address`; Ray is imported only when chosen (it
    is an optional dependency: `modelyard[ray]`)."""
    try:
        from modelyard.engine.ray_backend import RayBackend
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "ray":
            raise
        raise RuntimeError("the Ray backend needs Ray: pip install 'modelyard[ray]'") from None
    return RayBackend(settings)


def build_app(
    settings: Settings, *, web: bool = True, backend: Backend | None = None
) -> FastAPI:
    """The API (and, with `web`, the pages) over a new platform; its lifespan starts the engine."""
    app = create_app(build_platform(settings, backend=backend))
    if web:
        install_web(app)
    return app
