"""The private-address guard (`--deny-private-urls`): every spelling of a private address is
refused, and so is a host that cannot be resolved, both where the guard is used: the webhook
outbox and the transport that fetches URL file inputs (a real loopback server that must never
be reached)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from webhook_receiver import Receiver

from modelyard.engine.netguard import PublicOnlyTransport, private_address

from .test_webhooks import close, done, make_setup, settled

pytestmark = pytest.mark.asyncio(loop_scope="session")

#: Each names 127.0.0.1 or another address of the server's own networks.
PRIVATE = [
    "127.0.0.1",
    "localhost",
    "2130706433",  # 127.0.0.1 as one decimal number
    "::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::127.0.0.1",  # IPv4-compatible
    "64:ff9b::7f00:1",  # NAT64, well-known prefix
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b:1::808:808",  # NAT64, local-use prefix: a network's own translator
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254, the cloud metadata address
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo
    "fe80::1%25lo",  # a zone id, %-encoded as in a URL
    "[fe80::1%25lo]",
    "fe80::1%lo",
    "169.254.169.254",
    "100.64.0.1",  # carrier-grade NAT
    "224.0.0.1",  # multicast
    "0.0.0.0",
    "::",
]
UNRESOLVABLE = ["no-such-host.invalid", "bad..name"]
PUBLIC = ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("host", PRIVATE)
async def test_every_form_of_a_private_address_is_refused(host: str) -> None:
    refusal = await private_address(host)
    assert refusal is not None and "private address" in refusal


@pytest.mark.parametrize("host", UNRESOLVABLE)
async def test_a_host_that_cannot_be_resolved_is_refused(host: str) -> None:
    refusal = await private_address(host)
    assert refusal is not None and "cannot be resolved" in refusal


@pytest.mark.parametrize("host", PUBLIC)
async def test_public_addresses_pass(host: str) -> None:
    assert await private_address(host) is None


@pytest.fixture
def secret_port() -> Iterator[tuple[int, list[str]]]:
    """A loopback HTTP server; the list records every path it was asked for."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the stdlib names it
            asked.append(self.path)
            self.send_response(200)
            self.send_header("content-length", "6")
            self.end_headers()
            self.wfile.write(b"SECRET")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], asked
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "[::ffff:127.0.0.1]", "[::127.0.0.1]", "[64:ff9b::7f00:1]",
     "[fe80::1%25lo]", "no-such-host.invalid"],
)  # fmt: skip
async def test_file_input_transport_refuses_before_connecting(
    secret_port: tuple[int, list[str]], host: str
) -> None:
    port, asked = secret_port
    async with httpx.AsyncClient(transport=PublicOnlyTransport()) as client:
        with pytest.raises(httpx.ConnectError, match="this server fetches only public URLs"):
            await client.get(f"http://{host}:{port}/secret")
    assert asked == []


@pytest.mark.parametrize(
    "host", ["[::ffff:127.0.0.1]", "[::127.0.0.1]", "[64:ff9b::7f00:1]", "[fe80::1%25lo]"]
)
async def test_webhooks_to_mapped_private_addresses_are_not_sent(tmp_path: Path, host: str) -> None:
    with Receiver(limit=30).serving() as receiver:
        strict = await make_setup(tmp_path, allow_private_urls=False)
        try:
            port = httpx.URL(receiver.url).port
            prediction = strict.create(f"http://{host}:{port}/hook", ["completed"])
            strict.log.append(prediction.id, done(output="x"))
            [row] = await settled(strict, prediction.id, 1)
            assert row.abandoned_at is not None and row.attempts == 1
            assert "private address" in (row.last_error or "")
            assert receiver.hits == []
        finally:
            await close(strict)
