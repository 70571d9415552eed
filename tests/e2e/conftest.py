"""Fixtures for live-server tests: `tls`, `server` (one per test module), `hello` (a pushed model).

Each module gets its own server and data folder; environments are shared through the usual cache,
so a model's first boot in a session builds its environment once.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from live import EXAMPLES, LiveServer, Tls


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return Tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    live = LiveServer(data_dir=tmp_path_factory.mktemp("data"), tls=tls).start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def hello(server: LiveServer) -> str:
    """examples/hello-world pushed as admin/hello (public); returns the version id."""
    version = server.push(EXAMPLES / "hello-world", "admin/hello")
    with server.http() as client:
        client.patch("/v1/models/admin/hello", json={"visibility": "public"})
    return version
