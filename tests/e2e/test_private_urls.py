"""`--deny-private-urls`: URL file inputs cannot reach the server's own network (no SSRF through
a model that echoes its input), while data: URIs and this server's own file URLs still work."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from live import LiveServer, Tls, fixture_package, serving
from predicting import TERMINAL, wait_for


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    with serving(tmp_path_factory, tls, "guarded", "--deny-private-urls") as live:
        yield live


@pytest.fixture(scope="module")
def secret_url() -> Iterator[str]:
    """A loopback HTTP server with a file no outsider should read."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the stdlib names it
            body = b"INTERNAL-SECRET\n"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/secret.txt"
    finally:
        server.shutdown()


def test_private_urls_are_refused_but_data_and_own_files_work(
    guarded: LiveServer, secret_url: str
) -> None:
    version = guarded.push(fixture_package("input_path"), "admin/echo-file")
    with guarded.http() as api:
        refused = api.post("/v1/predictions", json={"version": version,
                                                    "input": {"document": secret_url}})  # fmt: skip
        done = wait_for(api, refused.json()["id"], TERMINAL)
        assert done["status"] == "failed"
        assert "private address" in done["error"] and "document" in done["error"]
        assert "INTERNAL-SECRET" not in (done["logs"] + str(done["output"]))

        data = api.post("/v1/predictions", json={"version": version,
                                                 "input": {"document": "data:,hello"}})  # fmt: skip
        assert wait_for(api, data.json()["id"], TERMINAL)["output"] == "hello"

        upload = api.post("/v1/files", files={"content": ("a.txt", b"own file", "text/plain")})
        own = api.post("/v1/predictions", json={"version": version,
                       "input": {"document": upload.json()["urls"]["get"]}})  # fmt: skip
        assert wait_for(api, own.json()["id"], TERMINAL)["output"] == "own file"
