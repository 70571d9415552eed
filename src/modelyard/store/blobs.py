"""Blob storage on local disk, addressed by SHA-256 so the same bytes are stored once.

`BlobStore` is the folder store and the interface every store has; `S3BlobStore` (s3blobs.py)
keeps blobs in a bucket and this folder layout as its local cache. `open_blob_store` picks one
from a storage URL (`--storage-url`): None or a folder, `file://...`, or `s3://bucket/prefix`.

Bytes arriving on the event loop (a request body) go in through `receive`: a worker thread
hashes and writes them while it pulls them from the loop one chunk at a time, so the loop never
waits on the disk and the body is never held in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

CHUNK = 1 << 20
_POLL = 1.0  # seconds a pulling thread waits before checking whether its receiver gave up


@dataclass(frozen=True)
class Blob:
    key: str  # the SHA-256 of the content, in hex
    size: int
    md5: str


class BadStorageURL(ValueError):
    """A storage URL that names no store we can open; the message says why, in one line."""


class StorageUnreachable(RuntimeError):
    """The store a storage URL names cannot be used (no bucket, no access, no network)."""


def open_blob_store(storage_url: str | None, cache_dir: Path, *, check: bool = True) -> BlobStore:
    """The store `storage_url` names: None is a folder at `cache_dir`; a path or `file://` URL
    that folder; `s3://bucket/prefix` a bucket, cached in `cache_dir` (with `check`, reached
    once now, so a wrong bucket or credentials fail at startup, not at the first upload)."""
    if storage_url is None:
        return BlobStore(cache_dir)
    text = storage_url.strip()
    parts = urlsplit(text)
    if not text:
        raise BadStorageURL("the storage URL is empty: give a folder or s3://bucket/prefix")
    if parts.scheme == "s3":
        if not parts.netloc:
            raise BadStorageURL(
                f"the storage URL {storage_url!r} names no bucket: write s3://bucket/prefix"
            )
        if parts.query or parts.fragment:
            raise BadStorageURL(
                f"the storage URL {storage_url!r} is not s3://bucket or s3://bucket/prefix"
            )
        from .s3blobs import S3BlobStore  # boto3 is imported only by those who use S3

        store = S3BlobStore(parts.netloc, unquote(parts.path), cache_dir)
        if check:
            store.check()
        return store
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise BadStorageURL(f"the storage URL {storage_url!r} is not file:///absolute/path")
        return BlobStore(Path(unquote(parts.path)))
    if parts.scheme == "":
        return BlobStore(Path(text).expanduser().resolve())
    raise BadStorageURL(
        f"the storage URL {storage_url!r} is not a folder, file:// or s3://bucket/prefix"
    )


class BlobStore:
    """`root/ab/abcdef…`: written to a temporary file first, then renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """The storage URL that opens this store again (from another process, say)."""
        return self.root.resolve().as_uri()

    def local_path(self, key: str) -> Path:
        """Where the blob is, or would be, in this store's folder (never fetched from elsewhere)."""
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a blob key: {key!r}")
        return self.root / key[:2] / key

    def path(self, key: str) -> Path:
        """The blob's bytes as a file on this machine, or a path that does not exist when the
        store has no such blob (a remote store downloads it first: call it off the loop)."""
        return self.local_path(key)

    def exists(self, key: str) -> bool:
        return self.local_path(key).exists()

    def check(self) -> None:
        """Raise StorageUnreachable when the store cannot be used (a folder always can)."""

    def put_bytes(self, data: bytes) -> Blob:
        return self.put_chunks([data])

    def put_stream(self, stream: BinaryIO) -> Blob:
        return self.put_chunks(iter(lambda: stream.read(CHUNK), b""))

    def put_file(self, path: Path) -> Blob:
        with open(path, "rb") as stream:
            return self.put_stream(stream)

    def put_chunks(self, chunks: Iterable[bytes]) -> Blob:
        sha256, md5, size = hashlib.sha256(), hashlib.md5(), 0
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    sha256.update(chunk)
                    md5.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            key = sha256.hexdigest()
            target = self.local_path(key)
            target.parent.mkdir(exist_ok=True)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Blob(key=key, size=size, md5=md5.hexdigest())

    async def receive(
        self,
        chunks: AsyncIterator[bytes],
        *,
        transform: Callable[[Iterator[bytes]], Iterator[bytes]] | None = None,
        executor: Executor | None = None,
    ) -> Blob:
        """Store what `chunks` (an async iterator on the running loop) yields, as it arrives.

        A thread of `executor` (the loop's default when None) pulls the chunks from the loop one
        at a time and hashes and writes each before asking for the next: nothing waits on the
        disk in the loop and at most a chunk is held. `transform`, run in that thread, turns
        the pulled chunks into the blob's bytes (a multipart parser, a size check). An exception
        from `chunks` or `transform` is raised here and what was written is discarded; so is it
        when the awaiting task is cancelled (the thread stops at its next chunk).
        """
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        pulled = _pull(chunks, loop, stop)
        body = pulled if transform is None else transform(pulled)
        try:
            return await loop.run_in_executor(executor, self.put_chunks, body)
        finally:
            stop.set()

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def copy_to(self, key: str, destination: Path) -> None:
        shutil.copyfile(self.path(key), destination)

    def delete(self, key: str) -> None:
        self.local_path(key).unlink(missing_ok=True)


class ReceiveAbandoned(Exception):
    """The task awaiting `BlobStore.receive` went away (cancelled, or the loop closed)."""


def _pull(
    chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop, stop: threading.Event
) -> Iterator[bytes]:
    """In a worker thread: the chunks of an async iterator that runs on `loop`, one at a time."""

    async def step() -> bytes | None:
        try:
            return await chunks.__anext__()
        except StopAsyncIteration:
            return None

    while True:
        if stop.is_set():
            raise ReceiveAbandoned
        future = asyncio.run_coroutine_threadsafe(step(), loop)
        while True:
            try:
                chunk = future.result(timeout=_POLL)
                break
            except TimeoutError:
                if stop.is_set() or loop.is_closed():
                    future.cancel()
                    raise ReceiveAbandoned from None
        if chunk is None:
            return
        if chunk:
            yield chunk
