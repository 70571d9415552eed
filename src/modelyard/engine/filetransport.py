"""Reading this server's own files as URL inputs without a network hop: an httpx transport
that answers from the file records and blobs (files.py's `http_client` mounts it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx

from modelyard.store.tables import File

Lookup = Callable[[httpx.URL], "tuple[File, Path] | None"]


class DeliveryTransport(httpx.AsyncBaseTransport):
    """Answers a request for one of this server's file URLs from the file itself (404 when
    `lookup`, which may read the database or download a blob, finds none)."""

    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # The record is read and the blob may be downloaded (S3 storage): not on the loop.
        found = await asyncio.to_thread(self.lookup, request.url)
        if found is None:
            return httpx.Response(404, request=request)
        file, path = found
        return httpx.Response(
            200,
            headers={"content-type": file.content_type, "content-length": str(file.size)},
            stream=_FileStream(path),
            request=request,
        )


class _FileStream(httpx.AsyncByteStream):
    def __init__(self, path: Path) -> None:
        self.path = path

    async def __aiter__(self) -> AsyncIterator[bytes]:
        stream = await asyncio.to_thread(self.path.open, "rb")
        try:  # each read in a thread too: a big input must not hold up the loop on the disk
            while chunk := await asyncio.to_thread(stream.read, 1 << 20):
                yield chunk
        finally:
            stream.close()
