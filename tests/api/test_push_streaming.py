"""A big push goes to disk as it arrives: the server never holds the package in memory, and a
big expansion (a tar bomb) is refused from the archive's headers.

Issue 13 measured a 512 MiB push peaking at 949 MB. Here a 48 MiB package (three times the JSON
body limit, so no middleware may buffer it either) is pushed through the in-process API while
tracemalloc records the peak of what Python allocates: it must stay a fraction of the package.
(bench/push_memory.py measures a 512 MiB push against a real server, RSS included.)
"""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_push_hostile import COG_YAML, PREDICT, Api, api, archive

from modelyard.runtime.package import pack_to

__all__ = ["api"]

pytestmark = pytest.mark.asyncio(loop_scope="session")

SIZE = 48 << 20
LIMIT = 64 << 20  # bytes of archive a push may send here
CHUNK = 1 << 20


def big_package(folder: Path) -> Path:
    folder.mkdir()
    (folder / "cog.yaml").write_text("predict: predict.py:Predictor\n")
    (folder / "predict.py").write_text(
        "class Predictor:\n    def predict(self) -> str:\n        return 'hi'\n"
    )
    with open(folder / "weights.bin", "wb") as out:
        out.writelines(os.urandom(CHUNK) for _ in range(SIZE // CHUNK))
    archive = folder.parent / "package.tar.gz"
    with open(archive, "wb") as stream:
        pack_to(folder, stream, limit=LIMIT)
    return archive


async def chunks(path: Path) -> AsyncIterator[bytes]:
    """The file a chunk at a time, as a client sends it (read on the loop: it is the client's)."""
    with open(path, "rb") as stream:  # noqa: ASYNC230
        while chunk := stream.read(CHUNK):
            yield chunk


@pytest.fixture
def limits() -> dict[str, int]:
    return {"package_limit": LIMIT, "package_max_expanded": LIMIT * 2}


async def test_a_big_push_is_streamed_to_disk(api: Api, tmp_path: Path) -> None:
    archive = big_package(tmp_path / "big")
    size = archive.stat().st_size
    tracemalloc.start()
    try:
        answer = await api.client.post(
            "/v1/models/admin/big/versions",
            content=chunks(archive),
            headers={"Content-Length": str(size)},
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert answer.status_code == 201, answer.text
    assert peak < size / 4, f"{peak / 1e6:.0f} MB allocated to receive {size / 1e6:.0f} MB"
    [blob] = [p for p in (api.data / "blobs").rglob("*") if p.is_file()]
    assert blob.stat().st_size == size and blob.name == answer.json()["id"]


async def test_a_body_over_the_package_limit_is_refused_as_it_streams(api: Api) -> None:
    """No Content-Length (chunked): found out on the way, answered 413, nothing kept."""

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(2 * LIMIT // CHUNK):
            yield os.urandom(CHUNK)

    answer = await api.client.post("/v1/models/admin/big/versions", content=endless())
    assert answer.status_code == 413, answer.text
    assert answer.json()["detail"] == f"The package is larger than the limit of {LIMIT} bytes."
    assert api.left() == []


async def test_a_tar_bomb_is_refused_from_its_headers(api: Api) -> None:
    """100 MB of zeros in a 100 kB archive, under the server's byte limit: refused for its
    ratio when the header of the big file is read, before that file is decompressed, let
    alone written out."""
    files = {"cog.yaml": COG_YAML, "predict.py": PREDICT, "zeros": bytes(100 << 20)}
    bomb = archive(files, level=9)
    assert len(bomb) < 200_000
    got = await api.refused(bomb, 413)
    assert got == (
        "The package is too large: the archive expands to more than 100 times its size "
        f"({len(bomb) / 1e6:.1f} MB compressed)."
    )
