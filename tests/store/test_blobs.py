"""BlobStore.receive: bytes arriving on the event loop are hashed and written by a worker thread
as they arrive (never collected first), and whatever goes wrong leaves nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from modelyard.store.blobs import BlobStore

CHUNK = 64 * 1024


def leftovers(blobs: BlobStore) -> list[Path]:
    return [p for p in blobs.root.rglob("*") if p.is_file()]


def incoming(blobs: BlobStore) -> list[Path]:
    return list(blobs.root.glob(".incoming-*"))


async def test_chunks_are_written_as_they_arrive(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    parts = [bytes([n]) * CHUNK for n in range(5)]
    on_disk: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            # Asked for the next chunk: the ones before it are already in the incoming file.
            files = incoming(blobs)
            on_disk.append(files[0].stat().st_size if files else 0)
            yield part

    blob = await blobs.receive(body())
    data = b"".join(parts)
    assert blob.key == hashlib.sha256(data).hexdigest() and blob.size == len(data)
    assert blob.md5 == hashlib.md5(data).hexdigest()
    assert blobs.read_bytes(blob.key) == data
    assert on_disk == [0, CHUNK, 2 * CHUNK, 3 * CHUNK, 4 * CHUNK]
    assert incoming(blobs) == []


async def test_the_writing_happens_off_the_event_loop(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    loop_thread = threading.get_ident()
    writers: set[int] = set()

    def transform(chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            writers.add(threading.get_ident())
            yield chunk.upper()

    async def body() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b""  # empty chunks are skipped
        yield b"def"

    blob = await blobs.receive(body(), transform=transform)
    assert blobs.read_bytes(blob.key) == b"ABCDEF"
    assert writers and loop_thread not in writers


async def test_a_refusing_transform_leaves_nothing(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)

    def limited(chunks: Iterator[bytes]) -> Iterator[bytes]:
        total = 0
        for chunk in chunks:
            total += len(chunk)
            if total > 2 * CHUNK:
                raise ValueError("too large")
            yield chunk

    async def body() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * CHUNK

    with pytest.raises(ValueError, match="too large"):
        await blobs.receive(body(), transform=limited)
    assert leftovers(blobs) == []


async def test_a_failing_body_leaves_nothing(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * CHUNK
        raise ConnectionResetError("the client went away")

    with pytest.raises(ConnectionResetError):
        await blobs.receive(body())
    assert leftovers(blobs) == []


async def test_a_cancelled_receive_stops_its_thread_and_leaves_nothing(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    started, never = asyncio.Event(), asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * CHUNK
        started.set()
        await never.wait()  # a client that stops sending
        yield b"never"

    task = asyncio.create_task(blobs.receive(body()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(600):  # the thread notices within a poll interval; this only stops a hang
        if not leftovers(blobs):
            break
        await asyncio.sleep(0.01)
    assert leftovers(blobs) == []
