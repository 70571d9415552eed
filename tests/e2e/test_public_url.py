"""Every URL the server hands out is absolute and starts with `--public-url`, whatever address
the request came in on (a server behind a proxy or a load balancer)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live import EXAMPLES, LiveServer, Tls

PUBLIC = "https://models.example.test/base"


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    server = LiveServer(
        data_dir=tmp_path_factory.mktemp("proxied"), tls=tls, extra_args=["--public-url", PUBLIC]
    ).start()
    try:
        yield server
    finally:
        server.stop()


def urls_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if "://" in value else []
    if isinstance(value, dict):
        return [u for v in value.values() for u in urls_in(v)]
    if isinstance(value, list):
        return [u for v in value for u in urls_in(v)]
    return []


def test_every_returned_url_uses_the_public_url(proxied: LiveServer, tmp_path: Path) -> None:
    version = proxied.push(EXAMPLES / "hello-world", "admin/hello")
    with proxied.http() as http:
        created = http.post(
            "/v1/predictions", json={"version": version, "input": {"name": "Ada"}},
            headers={"Prefer": "wait=30"},
        ).json()  # fmt: skip
        for _ in range(2):
            http.post("/v1/predictions", json={"version": version, "input": {}})
        uploaded = http.post("/v1/files", files={"content": ("a.txt", b"x", "text/plain")}).json()
        answers = [
            created,
            uploaded,
            http.get("/v1/models/admin/hello").json(),
            http.get("/v1/predictions").json(),
            http.get(created["urls"]["get"].replace(PUBLIC, proxied.url)).json(),
        ]
    found = [url for answer in answers for url in urls_in(answer)]
    assert {"get", "cancel", "stream", "web"} <= set(created["urls"])
    assert found and all(url.startswith(PUBLIC + "/") for url in found), found
