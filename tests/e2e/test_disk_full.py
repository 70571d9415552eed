"""A live server whose data folder's disk fills up (a small tmpfs: tests/support/fulldisk.py).

Whatever must be stored answers 507 problem+json with `Retry-After`, saying the disk is full,
and stores nothing half-way; the connection stays usable (a 500 used to close it, failing the
client's next request on it). A file output that cannot be stored fails its prediction saying
so, and its terminal webhook goes out once, when there is room again. The log says it in a few
lines, not a traceback per request. Once space is freed, everything works again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from live import PACKAGES, LiveServer, Tls, fixture_package
from support.fulldisk import fill, free, small_disk
from webhook_receiver import Receiver

from modelyard.logs import BURST

LIMIT = 120.0  # only stops a hung test


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with small_disk(tmp_path_factory.mktemp("disk"), "128m") as folder:
        yield folder


@pytest.fixture(scope="module")
def server(disk: Path, tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    """A server with its data folder on the small disk and its log elsewhere (a full disk
    takes the log's room too, and the test reads the log)."""
    logs = tmp_path_factory.mktemp("logs")
    live = LiveServer(data_dir=disk / "data", tls=tls, log_dir=logs).start()
    try:
        live.push(PACKAGES / "noop", "admin/noop")
        live.push(PACKAGES / "gated_file", "admin/gated-file")
        with live.http() as client:  # booted once with room: environments, packages
            for model in ("noop", "gated-file"):
                answer = client.post(
                    f"/v1/models/admin/{model}/predictions", json={"input": {}},
                    headers={"Prefer": "wait=60"},
                )  # fmt: skip
                assert answer.json()["status"] == "succeeded", answer.text
        yield live
    finally:
        free(disk)
        live.stop()


@pytest.fixture
def full(disk: Path, server: LiveServer) -> Iterator[Path]:
    """The disk, full for the test's block (and freed after it, whatever happens)."""
    fill(disk, (server.data_dir / "modelyard.db",))
    try:
        yield disk
    finally:
        free(disk)


def assert_no_space(answer: httpx.Response) -> None:
    assert answer.status_code == 507, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert int(answer.headers["retry-after"]) > 0
    assert "disk is full" in answer.json()["detail"], answer.json()


def own(server: LiveServer) -> tuple[int, int]:
    """(predictions, uploaded files) the admin has."""
    with server.http() as client:
        predictions = client.get("/v1/predictions").json()["results"]
        files = client.get("/v1/files").json()["results"]
    return len(predictions), len(files)


def test_what_must_be_stored_answers_507_and_the_connection_stays_usable(
    server: LiveServer, full: Path
) -> None:
    before, logged = own(server), len(server.logs())
    with server.http() as client:
        for _ in range(3):  # on one connection: each answered, none closed on the next
            assert_no_space(client.post("/v1/models/admin/noop/predictions", json={"input": {}}))
            assert_no_space(client.post("/v1/files", files={"content": ("a.bin", b"z" * 200_000)}))
            assert client.get("/v1/predictions").status_code == 200
        big = os.urandom(1 << 20) * 12  # streamed in chunks; refused while it arrives
        assert_no_space(client.post("/v1/files", files={"content": ("big.bin", big)}))
        assert client.get("/v1/predictions").status_code == 200
    with pytest.raises(RuntimeError) as push:
        server.push(fixture_package("output_str"), "admin/refused")
    assert "disk is full" in str(push.value) and "HTTP 507" in str(push.value)
    free(full)
    assert own(server) == before  # nothing half-stored
    assert not [p for p in (full / "data" / "blobs").iterdir() if p.name.startswith(".incoming")]
    with server.http() as client:
        again = client.post(
            "/v1/models/admin/noop/predictions", json={"input": {}}, headers={"Prefer": "wait=60"}
        )
        assert again.status_code == 201 and again.json()["status"] == "succeeded"
    log = server.logs()[logged:]  # what this test made the server write
    assert "Traceback" not in log, log[-3000:]
    assert log.count("507, no space left") <= BURST  # the rest counted, for the summary line


def test_a_file_output_that_cannot_be_stored_fails_saying_so(
    server: LiveServer, disk: Path
) -> None:
    gate = disk.parent / "gate"  # off the small disk: creating it must not need its room
    with Receiver(limit=LIMIT).serving() as receiver, server.http() as client:
        created = client.post(
            "/v1/models/admin/gated-file/predictions",
            json={"input": {"gate": str(gate), "kilobytes": 256}, "webhook": receiver.url,
                  "webhook_events_filter": ["completed"]},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        prediction_id = created.json()["id"]
        url = f"/v1/predictions/{prediction_id}"
        wait_for(lambda: client.get(url).json()["status"] == "processing")
        fill(disk, (server.data_dir / "modelyard.db",))
        try:
            gate.touch()
            # The output cannot be stored, nor can the failure: it waits in memory, retried.
            wait_for(lambda: f"events of {prediction_id} not written" in server.logs())
            assert client.get(url).json()["status"] == "processing"  # nothing unstored shown
        finally:
            free(disk)
        wait_for(lambda: client.get(url).json()["status"] == "failed")
        [hit] = receiver.wait_for(lambda hits: len(hits) >= 1)
        ended = client.get(url).json()
    assert "no space left on the server's disk" in ended["error"], ended["error"]
    assert ended["output"] is None
    assert hit.json()["status"] == "failed" and hit.json()["error"] == ended["error"]
    time.sleep(1.5)  # the outbox looks again meanwhile: nothing more is sent
    assert len(receiver.hits) == 1
    assert "ended early" not in ended["error"]


def wait_for(condition: object, limit: float = LIMIT) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("the condition never held")
