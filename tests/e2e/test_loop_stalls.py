"""Big bytes never stall the server: a 1 GB push and a model's 1 GB output file are hashed and
written off the event loop, so other requests are answered while they are in flight.

Real server processes on loopback and real worker processes. The tests order events (a request
answered while the big one is provably still under way: its body is held back by the client, or
its output is still being copied); they never time anything. A refused push leaves nothing in
blobs/.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import socket
import tarfile
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live import PACKAGES, LiveServer, Tls, serving
from predicting import eventually, get, start, wait_for

MIB = 1 << 20
GIB = 1 << 30
PUSH = "/v1/models/admin/huge/versions"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    """A server of this module's own, whose data folder (gigabytes of blobs) goes at the end."""
    with serving(tmp_path_factory, tls, "stalls") as live:
        yield live
    shutil.rmtree(live.data_dir, ignore_errors=True)


def blob_files(server: LiveServer) -> set[str]:
    root = server.data_dir / "blobs"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def incoming(server: LiveServer) -> list[Path]:
    """Blobs being written right now (`BlobStore` writes to `.incoming-*`, then renames)."""
    return list((server.data_dir / "blobs").glob(".incoming-*"))


def incoming_bytes(server: LiveServer) -> int:
    total = 0
    for path in incoming(server):
        try:
            total += path.stat().st_size
        except FileNotFoundError:  # renamed into place meanwhile
            pass
    return total


# -- a 1 GB push --------------------------------------------------------------------------------


class PaddedPackage:
    """packages/noop as a gzip'd tar followed by `padding` zero bytes inside the gzip stream (a
    tar may end in any number of zero blocks; readers stop at the first). Stored deflate blocks
    (level 0), so the body really is that big. Iterating yields the body in 1 MiB pieces and
    stops at `hold_at` bytes until `resume` is set; `sha256` is the body's once it was sent."""

    def __init__(self, padding: int, hold_at: int) -> None:
        self.padding = padding
        self.hold_at = hold_at
        self.sent = 0
        self.held = threading.Event()
        self.resume = threading.Event()
        self.digest = hashlib.sha256()

    def _tar(self) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in ("cog.yaml", "predict.py"):
                data = (PACKAGES / "noop" / name).read_bytes()
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    def _plain(self) -> Iterator[bytes]:
        yield self._tar()
        zeros = bytes(MIB)
        left = self.padding
        while left > 0:
            yield zeros[: min(left, MIB)]
            left -= MIB

    def __iter__(self) -> Iterator[bytes]:
        gzip = zlib.compressobj(0, zlib.DEFLATED, 31)
        for plain in self._plain():
            yield from self._send(gzip.compress(plain))
        yield from self._send(gzip.flush())

    def _send(self, piece: bytes) -> Iterator[bytes]:
        if not piece:
            return
        if self.sent < self.hold_at <= self.sent + len(piece):
            self.held.set()
            assert self.resume.wait(300), "the test never let the push go on"
        self.sent += len(piece)
        self.digest.update(piece)
        yield piece


def test_a_1_gb_push_streams_to_disk_and_other_requests_go_on(server: LiveServer) -> None:
    body = PaddedPackage(padding=GIB, hold_at=GIB // 2)
    result: dict[str, Any] = {}

    def push() -> None:
        with server.http() as client:
            result["response"] = client.post(
                PUSH, content=body, headers={"Content-Type": "application/gzip"}
            )

    pusher = threading.Thread(target=push)
    pusher.start()
    try:
        assert body.held.wait(300), "the push never got halfway"
        # The client holds the rest back, so the push is in flight whatever happens next. What
        # arrived so far is on disk already (not collected in memory, written at the end)...
        eventually(lambda: incoming_bytes(server) >= GIB // 4, "the pushed bytes on disk")
        # ...and meanwhile the server answers everyone else.
        with server.http() as other:
            answered = other.get("/v1/account")
        assert answered.status_code == 200 and answered.json()["username"] == "admin"
        assert pusher.is_alive() and "response" not in result
    finally:
        body.resume.set()
        pusher.join(600)
    response = result["response"]
    assert response.status_code == 201, response.text
    assert response.json()["id"] == body.digest.hexdigest()
    assert body.sent > GIB
    assert incoming(server) == []
    # The version runs (its package is the small tar at the front of that gigabyte).
    with server.http() as client:
        created = start(client, response.json()["id"])
        assert wait_for(client, created["id"], {"succeeded", "failed"})["output"] == "ok"


def test_a_refused_push_leaves_nothing_in_blobs(server: LiveServer) -> None:
    before = blob_files(server)
    packages = set((server.data_dir / "packages").glob("*"))
    with server.http() as client:
        # Not a gzip'd tar: the bytes were stored while they arrived, then let go.
        junk = client.post(PUSH, content=_chunks(b"not a package " * 4096, 64))
        assert junk.status_code == 422, junk.text
        assert "not a valid Cog package" in junk.json()["detail"]
        # A tar without cog.yaml: unpacked to be read, then both copies let go.
        empty = io.BytesIO()
        with tarfile.open(fileobj=empty, mode="w:gz") as tar:
            info = tarfile.TarInfo("README.md")
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
        no_config = client.post(PUSH, content=empty.getvalue())
        assert no_config.status_code == 422, no_config.text
        nothing = client.post(PUSH, content=b"")
        assert nothing.status_code == 400 and "body is empty" in nothing.json()["detail"]
    assert _declared_too_large(server).startswith("HTTP/1.1 413")
    assert blob_files(server) == before
    assert set((server.data_dir / "packages").glob("*")) == packages


def _chunks(data: bytes, count: int) -> Iterator[bytes]:
    for _ in range(count):
        yield data


def _declared_too_large(server: LiveServer) -> str:
    """A push announcing 3 GiB (over the 2 GiB limit) and sending nothing more: refused at once
    from its headers. Raw, since an HTTP client would insist on sending the 3 GiB."""
    with (
        socket.create_connection(("127.0.0.1", server.port)) as raw,
        server.tls.context().wrap_socket(raw, server_hostname="127.0.0.1") as conn,
    ):
        conn.settimeout(60)
        conn.sendall(
            f"POST {PUSH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {server.token}\r\nContent-Type: application/gzip\r\n"
            f"Content-Length: {3 * GIB}\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer or b"larger than the limit" not in answer:
            piece = conn.recv(65536)
            if not piece:
                break
            answer += piece
    text = answer.decode(errors="replace")
    assert "The package is larger than the limit of 2147483648 bytes." in text, text
    return text


# -- a 1 GB output file -------------------------------------------------------------------------


def test_a_1_gb_output_is_stored_while_other_requests_go_on(server: LiveServer) -> None:
    version = server.push(PACKAGES / "bigfile", "admin/bigfile")
    with server.http() as client:
        warm = start(client, version, megabytes=1)  # boots the model: the next one just runs
        assert wait_for(client, warm["id"], {"succeeded", "failed"})["status"] == "succeeded"
        big = start(client, version, megabytes=1024)
        # The worker made its file; the server is copying it into a blob now...
        (copying,) = eventually(lambda: incoming(server), "the output being stored")
        # ...and answers while it does: both answers come back before that copy is renamed
        # into place, which a loop busy hashing could only send once it was.
        during = get(client, big["id"])
        assert client.get("/v1/account").status_code == 200
        assert copying.exists(), "the answers waited for the output to be stored"
        assert during["status"] == "processing", during["status"]
        done = wait_for(client, big["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done.get("error")
    url = done["output"]
    assert url.startswith(f"{server.url}/delivery/") and url.endswith("/big.bin")
    with httpx.Client(verify=server.tls.context()) as anyone:
        head = anyone.head(url)
        assert head.status_code == 200 and int(head.headers["content-length"]) == GIB
        tail = anyone.get(url, headers={"Range": f"bytes={GIB - 8}-"})
        assert tail.content == b"\0\0\0\0tail"
    assert incoming(server) == []
