"""Output files at `/delivery/{key}/{name}`: no auth (the key is unguessable), expiring by policy."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from ..errors import not_found
from ..platform import PlatformDep

router = APIRouter(tags=["delivery"])


@router.get("/delivery/{access_key}/{name}")
async def deliver(access_key: str, name: str, platform: PlatformDep) -> FileResponse:
    found = platform.engine.files.delivered(access_key)
    if found is None:
        raise not_found("The requested file does not exist or has expired.")
    file, path = found
    return FileResponse(
        path,
        media_type=file.content_type,
        filename=file.name,
        content_disposition_type="inline",
        headers={"ETag": f'"{file.md5}"', "Cache-Control": "private, max-age=3600"},
    )
