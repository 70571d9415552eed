"""What every route needs: the settings, the database, blobs and the engine of this server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from modelyard.engine.engine import Engine
from modelyard.engine.urls import Urls
from modelyard.settings import Settings
from modelyard.store.blobs import BlobStore
from modelyard.store.database import Database


@dataclass
class Platform:
    settings: Settings
    db: Database
    blobs: BlobStore
    engine: Engine

    @property
    def urls(self) -> Urls:
        return self.engine.urls


def get_platform(request: Request) -> Platform:
    return request.app.state.platform


PlatformDep = Annotated[Platform, Depends(get_platform)]
