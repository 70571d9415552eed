"""How the push route receives a package: streamed into blob storage as it arrives, the size
limit enforced while it streams, and nothing left in blobs/ when it is refused. (The whole route,
with 1 GB bodies, runs against a live server in tests/e2e/test_loop_stalls.py.)"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request

from modelyard.api.errors import Problem
from modelyard.api.routes.versions import _receive
from modelyard.store.blobs import BlobStore

LIMIT = 256 * 1024


def platform(tmp_path: Path) -> Any:
    return SimpleNamespace(
        settings=SimpleNamespace(package_limit=LIMIT), blobs=BlobStore(tmp_path / "blobs")
    )


def request(chunks: list[bytes], headers: dict[str, str] | None = None) -> Request:
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ] or [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/models/a/b/versions",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    return Request(scope, receive)


def stored(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]


async def test_the_body_becomes_a_blob_named_by_its_sha256(tmp_path: Path) -> None:
    where = platform(tmp_path)
    chunks = [b"a" * 1000, b"b" * 2000, b"c"]
    blob = await _receive(where, request(chunks))
    assert blob.key == hashlib.sha256(b"".join(chunks)).hexdigest() and blob.size == 3001
    assert where.blobs.read_bytes(blob.key) == b"".join(chunks)


async def test_a_body_over_the_limit_is_refused_while_it_streams(tmp_path: Path) -> None:
    where = platform(tmp_path)
    chunks = [b"x" * (LIMIT // 4)] * 5  # no Content-Length: found out on the way
    with pytest.raises(Problem) as refused:
        await _receive(where, request(chunks))
    assert refused.value.status == 413
    assert refused.value.detail == f"The package is larger than the limit of {LIMIT} bytes."
    assert stored(tmp_path) == []


async def test_a_declared_size_over_the_limit_is_refused_before_reading(tmp_path: Path) -> None:
    where = platform(tmp_path)
    with pytest.raises(Problem) as refused:
        await _receive(where, request([b"x"], {"Content-Length": str(LIMIT + 1)}))
    assert refused.value.status == 413 and stored(tmp_path) == []


async def test_an_empty_body_is_refused(tmp_path: Path) -> None:
    where = platform(tmp_path)
    with pytest.raises(Problem) as refused:
        await _receive(where, request([]))
    assert refused.value.status == 400 and "body is empty" in refused.value.detail
    assert stored(tmp_path) == []
