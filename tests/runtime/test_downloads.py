"""Fetching file inputs (`localize_files`) against a real local HTTP server and real sockets."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelyard.runtime.downloads import InputFileError, filename_for, localize_files

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def localize(inputs: dict, fields: dict[str, bool], directory: Path, **options) -> dict:
    return asyncio.run(localize_files(inputs, fields, directory, **options))


@pytest.mark.parametrize(("url", "name"), [
    ("http://h/%2e%2e", "file"),
    ("http://h/a/%2E", "file"),
    ("http://h/..", "file"),
    ("http://h/", "file"),
    ("http://h/a/photo.png?x=1", "photo.png"),
    ("http://h/a%2Fb.txt", "a_b.txt"),
])
def test_file_names_are_never_dot_or_dot_dot(url: str, name: str) -> None:
    assert filename_for(url) == name


@pytest.mark.parametrize("path", ["%2e%2e", "output_str/%2e"])
def test_a_dot_dot_url_is_saved_as_file(http_server: str, tmp_path: Path, path: str) -> None:
    result = localize({"doc": f"{http_server}/{path}"}, {"doc": False}, tmp_path)
    saved = Path(result["doc"])
    assert saved.name == "file"
    assert saved.is_file() and saved.parent.parent == tmp_path


@pytest.mark.parametrize(("url", "message"), [
    (
        "http://127.0.0.1:99999/x",
        (
            "input 'doc': fetching http://127.0.0.1:99999/x failed: "
            "OverflowError: connect(): port must be 0-65535."
        ),
    ),
    (
        "http://[::1/x",
        "input 'doc': fetching http://[::1/x failed: ValueError: Invalid IPv6 URL",
    ),
    (
        "http://[::1]:x/y",
        "input 'doc': fetching http://[::1]:x/y failed: InvalidURL: Invalid port: 'x'",
    ),
])
def test_bad_urls_are_input_errors(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(InputFileError) as caught:
        localize({"doc": url}, {"doc": False}, tmp_path)
    assert str(caught.value) == message


def test_http_error_status_names_the_input(http_server: str, tmp_path: Path) -> None:
    url = f"{http_server}/no-such-file.txt"
    with pytest.raises(InputFileError) as caught:
        localize({"doc": url}, {"doc": False}, tmp_path)
    assert str(caught.value) == f"input 'doc': downloading {url} failed with HTTP 404"


@pytest.fixture
def stalling_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """A server that accepts connections and never answers; yields (base URL, accepted sockets)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_first_failure_cancels_the_other_downloads(
    stalling_server: tuple[str, list[socket.socket]], tmp_path: Path
) -> None:
    base, _ = stalling_server

    async def scenario() -> None:
        client = httpx.AsyncClient(timeout=30)
        before = set(asyncio.all_tasks())
        try:
            inputs = {"docs": [f"{base}/slow.txt", "http://[::1/x"]}
            with pytest.raises(InputFileError) as caught:
                await asyncio.wait_for(
                    localize_files(inputs, {"docs": True}, tmp_path, client=client), 10
                )
            assert str(caught.value) == (
                "input 'docs': fetching http://[::1/x failed: ValueError: Invalid IPv6 URL"
            )
            # nothing of the failed call is still running against the client
            assert set(asyncio.all_tasks()) - before == set()
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_local_paths_when_allowed(tmp_path: Path) -> None:
    document = FIXTURES / "input_path" / "predict.py"
    result = localize({"doc": str(document)}, {"doc": False}, tmp_path, allow_local_paths=True)
    assert result == {"doc": str(document.resolve())}
    with pytest.raises(InputFileError) as caught:
        localize({"doc": str(document)}, {"doc": False}, tmp_path)
    assert str(caught.value) == (
        f"input 'doc': {str(document)!r} is not an http(s) URL or a data: URI"
    )
