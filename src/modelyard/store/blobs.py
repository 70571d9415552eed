"""Blob storage on local disk, addressed by SHA-256 so the same bytes are stored once.

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

CHUNK = 1 << 20
_POLL = 1.0  # seconds a pulling thread waits before checking whether its receiver gave up


@dataclass(frozen=True)
class Blob:
    key: str  # the SHA-256 of the content, in hex
    size: int
    md5: str


class BlobStore:
    """`root/ab/abcdef…`: written to a temporary file first, then renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a blob key: {key!r}")
        return self.root / key[:2] / key

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

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
            target = self.path(key)
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
        self.path(key).unlink(missing_ok=True)


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
