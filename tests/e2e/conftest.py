"""Fixtures for live-server tests: `tls`, `server` (one per test module), pushed models (`hello`,
`noop`, `slow`, `ticker`), clients whose responses a `recorder` keeps for the contract check, and
`chromium` (one headless browser per module, for the browser tests).

Each module gets its own server and data folder; environments are shared through the usual cache,
so a model's first boot in a session builds its environment once.

`recorder` is module-scoped and checks everything it heard when the module ends; `http`, `client`
and the `bob_*` clients are module-scoped and report to it. Modules that check per test override
`recorder` with a function-scoped one and use the function-scoped `api`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from browser import launched_browser
from contract_support import Contract, Recorder, recorded_client
from live import EXAMPLES, PACKAGES, LiveServer, Tls, serving
from playwright.sync_api import Browser


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return Tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    with serving(tmp_path_factory, tls, "data") as live:
        yield live


@pytest.fixture(scope="module")
def hello(server: LiveServer) -> str:
    """examples/hello-world pushed as admin/hello (public); returns the version id."""
    version = server.push(EXAMPLES / "hello-world", "admin/hello")
    with server.http() as client:
        client.patch("/v1/models/admin/hello", json={"visibility": "public"})
    return version


@pytest.fixture(scope="module")
def noop(server: LiveServer) -> str:
    """packages/noop as admin/noop: returns "ok"."""
    return server.push(PACKAGES / "noop", "admin/noop")


@pytest.fixture(scope="module")
def slow(server: LiveServer) -> str:
    """packages/slow as admin/slow: returns `tag` after `seconds` or once its `gate` file exists."""
    return server.push(PACKAGES / "slow", "admin/slow")


@pytest.fixture(scope="module")
def ticker(server: LiveServer) -> str:
    """packages/ticker as admin/ticker: yields `n` ticks (a log line each), can wait on a `gate`."""
    return server.push(PACKAGES / "ticker", "admin/ticker")


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    """Every response of this module's clients; checked against the contract at the end."""
    recorder = Recorder()
    yield recorder
    recorder.check_all(Contract.load())


@pytest.fixture(scope="module")
def http(server: LiveServer, recorder: Recorder) -> Iterator[httpx.Client]:
    with recorder.attach(server.http()) as client:
        yield client


@pytest.fixture(scope="module")
def client(server: LiveServer, recorder: Recorder) -> Any:
    return recorded_client(server, recorder)


@pytest.fixture(scope="module")
def bob(server: LiveServer) -> str:
    """A second, ordinary account's token."""
    return server.cli("token", "create", "--username", "bob").strip()


@pytest.fixture(scope="module")
def bob_http(server: LiveServer, recorder: Recorder, bob: str) -> Iterator[httpx.Client]:
    with recorder.attach(server.http(bob)) as client:
        yield client


@pytest.fixture(scope="module")
def bob_client(server: LiveServer, recorder: Recorder, bob: str) -> Any:
    return recorded_client(server, recorder, bob)


@pytest.fixture
def api(server: LiveServer, recorder: Recorder) -> Iterator[httpx.Client]:
    """An admin httpx client for one test, reporting to `recorder`."""
    with recorder.attach(server.http()) as client:
        yield client


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with launched_browser() as browser:
        yield browser
