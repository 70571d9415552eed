"""Output files at `/delivery/{key}/{name}`: no auth (the key is unguessable), expiring by policy
(`--output-expiry`); after that, or for an unknown key, 404 problem+json.

The files are made by models, so they are untrusted content on this site's origin: media and
plain data are shown inline, anything else (HTML, SVG, scripts...) is a download, and every answer
forbids sniffing and runs sandboxed if a browser opens it as a page, so an output can never act
with the signed-in user's cookie.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from modelyard.store.tables import utcnow

from ..errors import not_found
from ..platform import PlatformDep

router = APIRouter(tags=["delivery"])
MAX_AGE = 3600
INLINE_PREFIXES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "audio/",
                   "video/", "text/plain", "application/json", "application/pdf")  # fmt: skip
UNTRUSTED = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}


@router.api_route("/delivery/{access_key}/{name}", methods=["GET", "HEAD"])
def deliver(access_key: str, name: str, platform: PlatformDep) -> FileResponse:
    found = platform.engine.files.delivered(access_key)
    if found is None:
        raise not_found("The requested file does not exist or has expired.")
    file, path = found
    max_age = MAX_AGE
    if file.expires_at is not None:  # caches must not serve it past its expiry
        max_age = max(0, min(MAX_AGE, int((file.expires_at - utcnow()).total_seconds())))
    return FileResponse(
        path,
        media_type=file.content_type,
        filename=file.name,
        content_disposition_type="inline" if shown_inline(file.content_type) else "attachment",
        headers={
            "ETag": f'"{file.md5}"',
            "Cache-Control": f"private, max-age={max_age}",
            **UNTRUSTED,
        },
    )


def shown_inline(content_type: str) -> bool:
    return content_type.lower().startswith(INLINE_PREFIXES)
