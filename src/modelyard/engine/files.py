"""Files: uploads through the Files API, and files in and out of predictions.

Uploads: a File record (`purpose` upload) per `POST /v1/files`, expiring `settings.file_expiry`
seconds later. Their JSON carries `urls.get` (what the clients put into prediction inputs) and
`urls.download`, a signed download URL that works without auth until the file expires.
Outputs: every file a model returns becomes a blob and a File record, served at an unguessable
`/delivery/{key}/{name}` URL (no auth needed: the JS client downloads without a token), expiring
after `settings.output_expiry` seconds when that is set. `store_outputs` hashes, copies and records
them in a thread pool of their own, so a big output never stalls the event loop; it hands back the
records too (a training's finisher takes its weights from them).
Inputs: this server's own `/v1/files/{id}` URLs are rewritten to their delivery URLs and fetched
through an in-process transport, so a model reads them without a network hop or a token.
Signed download URLs of this server are read the same way (anyone holding one may use it).

Signing: signing.py (the server secret and the download signatures). A full disk while storing
outputs fails with `NoSpaceLeft` (store/space.py), after letting go of what was copied.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import mimetypes
import os
import re
import time
import unicodedata
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlparse

import httpx

from modelyard.runtime.events import OutputFile, all_scalars
from modelyard.settings import Settings
from modelyard.store.blobs import Blob, BlobStore
from modelyard.store.database import Database
from modelyard.store.files import (
    NewFile,
    account_upload,
    add_file,
    blob_in_use,
    delete_file,
    expired_files,
    file_by_access_key,
    get_file,
    list_files,
    owner_username,
)
from modelyard.store.space import NoSpaceLeft, out_of_space
from modelyard.store.tables import File, utcnow

from .filetransport import DeliveryTransport
from .netguard import PublicOnlyTransport
from .signing import SECRET_FILE, download_signature, signing_key  # noqa: F401 - SECRET_FILE: re-exported
from .urls import Urls
from .views import timestamp

_OWN_FILE = re.compile(r"^/(?:v1/)?files/([0-9a-z]{26})(?:/download)?$")
_DOWNLOAD = re.compile(r"^/(?:v1/)?files/([0-9a-z]{26})/download$")
_DELIVERY = re.compile(r"^/delivery/([A-Za-z0-9_-]+)/[^/]+$")
PURGE_EVERY = 60.0  # seconds between sweeps of expired files
PURGE_BATCH = 500
MAX_NAME_BYTES = 255
log = logging.getLogger(__name__)


# Output files are hashed and copied into blobs here, never on the event loop; a pool of its own
# so that big outputs do not hold up the loop's default executor.
OUTPUTS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="outputs")


@dataclass(frozen=True, slots=True)
class StoredFile:
    """An output file already in blob storage: an instance on another machine uploaded it
    there (engine/ray_actor.py) and sent this in place of its `OutputFile`, so the engine
    records it without reading or copying its bytes."""

    key: str  # the blob's key (SHA-256)
    name: str  # the file's name, as the model wrote it
    size: int
    md5: str


@dataclass(frozen=True)
class StoredOutputs:
    """A model's output once its files are stored: `value` with every OutputFile replaced by its
    absolute delivery URL, and `files`, the File records of those files in output order."""

    value: Any
    files: list[File]


class FileService:
    """Stores files as blobs with a record, renders their JSON and URLs, signs downloads."""

    def __init__(self, settings: Settings, db: Database, blobs: BlobStore, urls: Urls) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self.urls = urls
        self._signing_key: bytes | None = None
        self._last_purge = 0.0

    def save(self, new: NewFile, blob: Blob) -> File:
        with self.db.session() as session:
            return add_file(session, new, blob)

    # -- the Files API ----------------------------------------------------------------------

    def save_upload(
        self, account_id: int, name: str, content_type: str, metadata: dict[str, Any], blob: Blob
    ) -> File:
        now = utcnow()
        new = NewFile(
            account_id=account_id,
            name=name,
            content_type=content_type,
            metadata=metadata,
            created_at=now,
            expires_at=now + timedelta(seconds=self.settings.file_expiry),
        )
        try:
            return self.save(new, blob)
        except BaseException:  # no record (a full disk): the bytes must not stay behind
            self._let_go([blob])
            raise

    def upload(self, account_id: int, file_id: str) -> File | None:
        """The account's uploaded file, unless it expired (another account's is None too)."""
        with self.db.session() as session:
            return account_upload(session, file_id, account_id)

    def uploads(
        self, account_id: int, before: tuple[datetime, str] | None, limit: int
    ) -> list[File]:
        with self.db.session() as session:
            return list_files(session, account_id, before=before, limit=limit)

    def file_json(self, file: File, owner: str) -> dict[str, Any]:
        """Replicate's File shape, with `name` and `etag` (replicate 1.0.7 requires both)."""
        urls = {"get": self.urls.file(file.id)}
        if file.expires_at is not None:
            urls["download"] = self.signed_download_url(file, owner)
        return {
            "id": file.id,
            "name": file.name,
            "content_type": file.content_type,
            "size": file.size,
            "etag": file.md5,
            "checksums": {"sha256": file.sha256, "md5": file.md5},
            "metadata": file.file_metadata,
            "created_at": timestamp(file.created_at),
            "expires_at": timestamp(file.expires_at),
            "urls": urls,
        }

    def delete(self, file: File) -> None:
        """Delete the record, and its blob when nothing else refers to the same bytes."""
        with self.db.session() as session:
            unused = delete_file(session, file)
        if unused:
            # A concurrent upload of the very same bytes could be between writing the blob
            # and adding its record here; the window is a few milliseconds and accepted.
            self.blobs.delete(file.blob_key)

    def purge_expired(self) -> int:
        """Delete expired records (uploads and outputs) and their unused blobs; how many."""
        with self.db.session() as session:
            files = expired_files(session, PURGE_BATCH)
        for file in files:
            self.delete(file)
        self._last_purge = time.monotonic()
        return len(files)

    def purge_if_due(self) -> None:
        """Sweep at most once a minute: cheap enough to call on every upload."""
        if time.monotonic() - self._last_purge >= PURGE_EVERY:
            self.purge_expired()

    # -- signed download URLs ---------------------------------------------------------------

    def signature(self, file_id: str, owner: str, expiry: int) -> str:
        if self._signing_key is None:
            self._signing_key = signing_key(self.settings.data_dir)
        return download_signature(self._signing_key, file_id, owner, expiry)

    def signed_download_url(self, file: File, owner: str, expiry: int | None = None) -> str:
        if expiry is None:
            assert file.expires_at is not None
            expiry = int(file.expires_at.timestamp())
        query = {
            "owner": owner,
            "expiry": expiry,
            "signature": self.signature(file.id, owner, expiry),
        }
        return f"{self.urls.file(file.id)}/download?{urlencode(query)}"

    def check_signature(self, file_id: str, owner: str, expiry: int, signature: str) -> str | None:
        """Why the signature does not grant access, or None when it does."""
        try:
            # `+` arrives as a space when a URL was copied without encoding it
            given = base64.b64decode(signature.replace(" ", "+"), validate=True)
        except (binascii.Error, ValueError):
            return "The download URL's signature is not valid."
        expected = base64.b64decode(self.signature(file_id, owner, expiry))
        if not hmac.compare_digest(given, expected):
            return "The download URL's signature is not valid."
        if expiry <= time.time():
            return "The download URL has expired."
        return None

    def signed_file(self, file_id: str, owner: str) -> File | None:
        """The live upload `file_id` if it belongs to `owner` (after the signature checked out)."""
        with self.db.session() as session:
            file = get_file(session, file_id)
            if file is None or file.purpose != "upload" or owner_username(session, file) != owner:
                return None
            return file

    def _signed_url_file(self, url: str) -> File | None:
        """The file a valid signed download URL of this server points at."""
        parsed = urlparse(url)
        match = _DOWNLOAD.match(parsed.path)
        query = {k: v[-1] for k, v in parse_qs(parsed.query, keep_blank_values=True).items()}
        if match is None or not {"owner", "expiry", "signature"} <= query.keys():
            return None
        if not query["expiry"].isdigit():
            return None
        file_id, owner, expiry = match.group(1), query["owner"], int(query["expiry"])
        if self.check_signature(file_id, owner, expiry, query["signature"]) is not None:
            return None
        return self.signed_file(file_id, owner)

    # -- outputs ----------------------------------------------------------------------------

    async def store_outputs(self, account_id: int, prediction_id: str, value: Any) -> StoredOutputs:
        """Store every OutputFile in `value` as a blob with an output record, off the event loop
        (hashing, copying and the insert run in the outputs' thread pool; a value without files
        never leaves the loop); a `StoredFile` is only recorded. Returns `value` with each file
        replaced by its delivery URL, and the records in output order."""
        found: list[Path | StoredFile] = []
        _collect(value, found)
        if not found:
            return StoredOutputs(value, [])
        loop = asyncio.get_running_loop()
        stored = await loop.run_in_executor(
            OUTPUTS, self._save_outputs, account_id, prediction_id, found
        )
        urls = iter([self.delivery_url(file) for file in stored])
        return StoredOutputs(_replace(value, urls), stored)

    def _save_outputs(
        self, account_id: int, prediction_id: str, paths: list[Path | StoredFile]
    ) -> list[File]:
        """Blobs for the files at `paths` (a StoredFile is one already) and their records, added
        in one transaction. When a file cannot be read or stored, none is recorded and the bytes
        already stored are let go; a full disk raises `NoSpaceLeft`, which says so."""
        blobs: list[Blob] = []
        try:
            blobs.extend(
                self.blobs.put_file(path)
                if isinstance(path, Path)
                else Blob(key=path.key, size=path.size, md5=path.md5)
                for path in paths
            )
            expiry, now = self.settings.output_expiry, utcnow()
            with self.db.session() as session:
                return [
                    add_file(
                        session,
                        NewFile(
                            account_id=account_id,
                            name=path.name,
                            content_type=guess_type(path.name),
                            purpose="output",
                            prediction_id=prediction_id,
                            created_at=now,
                            expires_at=None if expiry is None else now + timedelta(seconds=expiry),
                        ),
                        blob,
                    )
                    for path, blob in zip(paths, blobs, strict=True)
                ]
        except BaseException as exc:
            self._let_go(blobs)
            if out_of_space(exc):
                raise NoSpaceLeft("the prediction's output files could not be stored") from exc
            raise

    def _let_go(self, blobs: list[Blob]) -> None:
        """Drop blobs stored for records that were then not made (unless something else
        stores the same bytes); a failure here must not hide the one that caused it."""
        for blob in blobs:
            try:
                self.drop_unused_blob(blob.key)
            except Exception:
                log.warning("could not drop the unused blob %s", blob.key, exc_info=True)

    def drop_unused_blob(self, key: str) -> bool:
        """Delete a blob no record refers to (bytes stored for something that was then refused);
        False, and kept, when something else stores the same bytes."""
        with self.db.session() as session:
            if blob_in_use(session, key):
                return False
        self.blobs.delete(key)
        return True

    def delivery_url(self, file: File) -> str:
        return self.urls.delivery(file.access_key, file.name)

    def delivered(self, access_key: str) -> tuple[File, Path] | None:
        with self.db.session() as session:
            file = file_by_access_key(session, access_key)
        return self.on_disk(file)

    def on_disk(self, file: File | None) -> tuple[File, Path] | None:
        """The file's bytes on this machine. With S3 storage that may download them (a replica
        serves what another one stored): call it off the event loop."""
        if file is None:
            return None
        path = self.blobs.path(file.blob_key)  # no exists() round trip first
        return (file, path) if path.exists() else None

    # -- inputs -----------------------------------------------------------------------------

    def own_file_id(self, url: str) -> str | None:
        """The id when `url` is this server's `/v1/files/{id}` URL (which needs its owner).

        A validly signed download URL is not counted: whoever holds one may use it.
        """
        if not isinstance(url, str) or not url.startswith(self.settings.public_url + "/"):
            return None
        match = _OWN_FILE.match(urlparse(url).path)
        if match is None or self._signed_url_file(url) is not None:
            return None
        return match.group(1)

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

    def http_client(self) -> httpx.AsyncClient:
        """Fetches URL inputs; this server's delivery URLs are read straight from disk."""
        origin = self.settings.public_url
        return httpx.AsyncClient(
            timeout=httpx.Timeout(60.0, connect=10.0),
            follow_redirects=True,
            mounts={origin: DeliveryTransport(self.local_file)},
            transport=None if self.settings.allow_private_urls else PublicOnlyTransport(),
        )

    def local_file(self, url: httpx.URL) -> tuple[File, Path] | None:
        """What the in-process transport serves: a delivery URL or a signed download URL."""
        match = _DELIVERY.match(unquote(url.path))
        if match is not None:
            return self.delivered(match.group(1))
        return self.on_disk(self._signed_url_file(str(url)))


def _collect(value: Any, paths: list[Path | StoredFile]) -> None:
    """The paths of the OutputFiles (and the StoredFiles) in `value`, depth first, in order."""
    if isinstance(value, OutputFile):
        paths.append(value.path)
    elif isinstance(value, StoredFile):
        paths.append(value)
    elif isinstance(value, list) and not all_scalars(value):
        for item in value:
            _collect(item, paths)
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, paths)


def _replace(value: Any, urls: Iterator[str]) -> Any:
    """`value` with its OutputFiles and StoredFiles replaced, in the order `_collect` found them,
    by `urls`."""
    if isinstance(value, (OutputFile, StoredFile)):
        return next(urls)
    if isinstance(value, list):
        return [_replace(item, urls) for item in value]
    if isinstance(value, dict):
        return {key: _replace(item, urls) for key, item in value.items()}
    return value


def guess_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def clean_name(name: str | None) -> str:
    """A file name safe in a URL path segment and on disk: the last path component, no control
    characters, at most 255 bytes of UTF-8 (the extension kept); `file` when nothing is left."""
    text = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(c for c in text if unicodedata.category(c)[0] != "C").strip()
    if text in ("", ".", ".."):
        return "file"
    if len(text.encode()) > MAX_NAME_BYTES:
        stem, ext = os.path.splitext(text)
        budget = MAX_NAME_BYTES - len(ext.encode())
        if budget < 1:
            stem, ext, budget = text, "", MAX_NAME_BYTES
        text = stem.encode()[:budget].decode(errors="ignore") + ext
    return text
