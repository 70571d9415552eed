"""Files in and out of predictions.

Outputs: every file a model returns becomes a blob and a File record, served at an unguessable
`/delivery/{key}/{name}` URL (no auth needed: the JS client downloads without a token).
Inputs: this server's own `/v1/files/{id}` URLs are rewritten to their delivery URLs and fetched
through an in-process transport, so a model reads them without a network hop or a token.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx

from modelyard.runtime.events import OutputFile
from modelyard.settings import Settings
from modelyard.store.blobs import Blob, BlobStore
from modelyard.store.database import Database
from modelyard.store.files import NewFile, add_file, file_by_access_key, get_file
from modelyard.store.tables import File, utcnow

from .urls import Urls

_OWN_FILE = re.compile(r"^/(?:v1/)?files/([0-9a-z]{26})(?:/download)?$")
_DELIVERY = re.compile(r"^/delivery/([A-Za-z0-9_-]+)/[^/]+$")


class FileService:
    """Stores files as blobs with a record, and renders their URLs."""

    def __init__(self, settings: Settings, db: Database, blobs: BlobStore, urls: Urls) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self.urls = urls

    def save(self, new: NewFile, blob: Blob) -> File:
        with self.db.session() as session:
            return add_file(session, new, blob)

    def save_output(self, account_id: int, prediction_id: str, path: Path) -> str:
        blob = self.blobs.put_file(path)
        expiry = self.settings.output_expiry
        new = NewFile(
            account_id=account_id,
            name=path.name,
            content_type=guess_type(path.name),
            purpose="output",
            prediction_id=prediction_id,
            expires_at=None if expiry is None else utcnow() + timedelta(seconds=expiry),
        )
        return self.delivery_url(self.save(new, blob))

    def delivery_url(self, file: File) -> str:
        return self.urls.delivery(file.access_key, file.name)

    def outputs_to_urls(self, account_id: int, prediction_id: str, value: Any) -> Any:
        """`value` with every OutputFile stored and replaced by its URL."""
        if isinstance(value, OutputFile):
            return self.save_output(account_id, prediction_id, value.path)
        if isinstance(value, list):
            return [self.outputs_to_urls(account_id, prediction_id, v) for v in value]
        if isinstance(value, dict):
            return {k: self.outputs_to_urls(account_id, prediction_id, v) for k, v in value.items()}
        return value

    def own_file_id(self, url: str) -> str | None:
        """The id when `url` is this server's `/v1/files/{id}` URL."""
        if not isinstance(url, str) or not url.startswith(self.settings.public_url + "/"):
            return None
        match = _OWN_FILE.match(urlparse(url).path)
        return match.group(1) if match else None

    def own_file(self, url: str) -> File | None:
        file_id = self.own_file_id(url)
        if file_id is None:
            return None
        with self.db.session() as session:
            return get_file(session, file_id)

    def rewrite_inputs(self, inputs: dict[str, Any], file_fields: Iterable[str]) -> dict[str, Any]:
        """Own file URLs among the file inputs replaced by delivery URLs (which keep the name)."""
        result = dict(inputs)
        for name in file_fields:
            value = result.get(name)
            if isinstance(value, list):
                result[name] = [self._rewrite(v) for v in value]
            elif value is not None:
                result[name] = self._rewrite(value)
        return result

    def _rewrite(self, url: Any) -> Any:
        file = self.own_file(url) if isinstance(url, str) else None
        return url if file is None else self.delivery_url(file)

    def delivered(self, access_key: str) -> tuple[File, Path] | None:
        with self.db.session() as session:
            file = file_by_access_key(session, access_key)
        if file is None or not self.blobs.exists(file.blob_key):
            return None
        return file, self.blobs.path(file.blob_key)

    def http_client(self) -> httpx.AsyncClient:
        """Fetches URL inputs; this server's delivery URLs are read straight from disk."""
        origin = self.settings.public_url
        return httpx.AsyncClient(
            timeout=httpx.Timeout(60.0, connect=10.0),
            follow_redirects=True,
            mounts={origin: _DeliveryTransport(self)},
        )


class _DeliveryTransport(httpx.AsyncBaseTransport):
    def __init__(self, files: FileService) -> None:
        self.files = files

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        match = _DELIVERY.match(unquote(request.url.path))
        found = self.files.delivered(match.group(1)) if match else None
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
        with self.path.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                yield chunk


def guess_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"
