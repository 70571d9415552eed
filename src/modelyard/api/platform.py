"""What every route needs: the settings, the database, blobs and the engine of this server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from modelyard.billing.hardware import HardwareTable
from modelyard.caches import TtlCache
from modelyard.engine.engine import Engine
from modelyard.engine.urls import Urls
from modelyard.settings import Settings
from modelyard.store.blobs import BlobStore
from modelyard.store.database import Database
from modelyard.store.tables import Account
from modelyard.store.writer import Writer


@dataclass
class Platform:
    settings: Settings
    db: Database
    blobs: BlobStore
    engine: Engine
    writer: Writer
    tokens: TtlCache[Account] = field(default_factory=lambda: TtlCache(ttl=5.0))
    versions: TtlCache[Any] = field(default_factory=lambda: TtlCache(ttl=2.0))
    # Set when the server is told to stop, before it stops taking requests: a `Prefer: wait`
    # that is held then answers at once rather than have its connection cut (api/jobs.py).
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def urls(self) -> Urls:
        return self.engine.urls

    @property
    def hardware(self) -> HardwareTable:
        """The hardware table (the engine's: the API and the engine read one table)."""
        return self.engine.hardware


async def get_platform(request: Request) -> Platform:
    return request.app.state.platform


PlatformDep = Annotated[Platform, Depends(get_platform)]
