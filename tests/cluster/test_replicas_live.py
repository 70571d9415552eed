"""Two real `modelyard serve` processes on one fresh PostgreSQL database and one blob folder
(`--storage-url`), with real workers running packages/tally, a model that writes a line to a
ledger file each time it starts and each time it sees a cancel (docs/replicas.md).

Both start at the same moment on the empty database; predictions spread over both run exactly
once and each webhook arrives once; the SSE stream on one follows a prediction run by the other
at once; a cancel on one reaches the model on the other; a replica killed with SIGKILL loses its
queue to the other when its lease expires, and each queued prediction runs once. Also: a second
`serve` on an SQLite data folder in use refuses to start, and `modelyard token`/`password` work
on the database that `--database-url` names.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e.live import LiveServer, Replica, Tls, _env, _modelyard, free_port
from live_support import TALLY, create, lines, wait_for
from sqlalchemy import create_engine, text
from support.postgres import fresh_database
from webhook_receiver import Receiver

LEASE_TTL = 3.0


@dataclass
class Cluster:
    url: str
    a: Replica
    b: Replica
    version: str


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return Tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    with fresh_database("live") as url:
        # packages/tally appends to a ledger in the test's folder, which a sandboxed worker may
        # not write: these tests are about replicas (the sandbox has tests/e2e/test_sandbox*.py)
        shared = ["--database-url", url, "--storage-url", str(root / "blobs"),
                  "--lease-ttl", str(LEASE_TTL), "--no-sandbox"]  # fmt: skip
        a, b = (
            Replica(data_dir=root / name, tls=tls, extra_args=shared, token="not yet")
            for name in ("a", "b")
        )
        try:
            starts = [threading.Thread(target=r.start) for r in (a, b)]  # at the same moment
            for thread in starts:
                thread.start()
            for thread in starts:
                thread.join()
            assert a.process and b.process and a.process.poll() is None is b.process.poll()
            token = a.cli("token", "create", "--username", "admin", "--database-url", url)
            a.token = b.token = token.strip()
            yield Cluster(url, a, b, a.push(TALLY, "admin/tally"))
        finally:
            a.stop()
            b.stop()


def test_replicas_started_together_on_an_empty_database_both_serve(cluster: Cluster) -> None:
    for server in (cluster.a, cluster.b):
        with server.http() as client:
            assert client.get("/v1/predictions").status_code == 200
        assert "Traceback" not in server.logs()
    engine = create_engine(cluster.url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM replicas")).scalar_one() == 2
        assert connection.execute(text("SELECT count(*) FROM accounts")).scalar_one() == 1
    engine.dispose()


def test_predictions_on_both_replicas_run_once_and_webhooks_arrive_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    with Receiver().serving() as receiver:
        created = [
            create([cluster.a, cluster.b][i % 2], cluster.version,
                   input={"tag": f"t{i}", "ledger": str(ledger)}, webhook=receiver.url,
                   webhook_events_filter=["completed"])
            for i in range(12)
        ]  # fmt: skip
        done = [wait_for(cluster.a, p["id"]) for p in created]
        assert [(p["status"], p["output"]) for p in done] == [
            ("succeeded", f"t{i}") for i in range(12)
        ]
        for prediction in created:
            receiver.wait_for_prediction(prediction["id"], bool)
        time.sleep(2.5)  # both senders look at the outbox again: nothing goes twice
        assert sorted(h.json()["id"] for h in receiver.hits) == sorted(p["id"] for p in created)
    assert sorted(lines(ledger)) == sorted(f"start t{i}" for i in range(12))


def test_the_stream_on_one_replica_follows_a_prediction_run_by_the_other(
    cluster: Cluster, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    prediction = create(cluster.a, cluster.version, input={"tag": "followed", "gate": str(gate)},
                        stream=True)  # fmt: skip
    wait_for(cluster.b, prediction["id"], {"processing"})
    seen: dict[str, float] = {}

    def follow() -> None:
        with cluster.b.http() as client, client.stream(
            "GET", prediction["urls"]["stream"], headers={"Accept": "text/event-stream"}
        ) as stream:  # fmt: skip
            for line in stream.iter_lines():
                if line.startswith(": connected"):
                    seen["connected"] = time.monotonic()
                if line.startswith("event: done"):
                    seen["done"] = time.monotonic()
                    return

    follower = threading.Thread(target=follow)
    follower.start()
    deadline = time.monotonic() + 10
    while "connected" not in seen and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    gate.touch()
    follower.join(30)
    assert "done" in seen  # woken by NOTIFY (tests/cluster/test_replicas.py shows it is that)


def test_a_cancel_on_one_replica_reaches_the_model_on_the_other(
    cluster: Cluster, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    prediction = create(cluster.a, cluster.version, input={
        "tag": "c", "ledger": str(ledger), "gate": str(tmp_path / "never")})  # fmt: skip
    wait_for(cluster.b, prediction["id"], {"processing"})
    with cluster.b.http() as client:
        answer = client.post(f"/v1/predictions/{prediction['id']}/cancel")
    assert answer.status_code == 200 and answer.json()["status"] == "canceled", answer.text
    assert lines(ledger) == ["start c", "cancel c"]


def test_a_killed_replicas_queue_runs_once_on_the_other(cluster: Cluster, tmp_path: Path) -> None:
    ledger, never = tmp_path / "ledger", tmp_path / "never"
    blocker = create(cluster.a, cluster.version, input={
        "tag": "blocker", "ledger": str(ledger), "gate": str(never)})  # fmt: skip
    queued = [
        create(cluster.a, cluster.version, input={"tag": f"q{i}", "ledger": str(ledger)})
        for i in range(3)
    ]
    wait_for(cluster.b, blocker["id"], {"processing"})
    cluster.a.kill()  # SIGKILL: its row stays until the lease runs out
    killed = time.monotonic()
    done = [wait_for(cluster.b, p["id"]) for p in queued]
    assert [(p["status"], p["output"]) for p in done] == [("succeeded", f"q{i}") for i in range(3)]
    assert time.monotonic() - killed >= LEASE_TTL - 1.0  # not before the lease could expire
    failed = wait_for(cluster.b, blocker["id"])
    assert failed["status"] == "failed" and "server stopped" in failed["error"]
    never.touch()  # a worker that outlived its server ends
    assert sorted(lines(ledger)) == sorted(["start blocker", "start q0", "start q1", "start q2"])
    cluster.a.start()  # it comes back under a new id and serves again
    again = create(cluster.a, cluster.version, input={"tag": "back", "ledger": str(ledger)})
    assert wait_for(cluster.a, again["id"])["output"] == "back"


def test_token_and_password_work_on_the_database_url(cluster: Cluster, tmp_path: Path) -> None:
    elsewhere = tmp_path / "no-data-here"

    def cli(*args: str) -> str:
        result = subprocess.run(
            [_modelyard(), *args, "--database-url", cluster.url, "--data-dir", str(elsewhere)],
            check=False, capture_output=True, text=True, env=_env(), timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    token = cli("token", "create", "--username", "carol", "--name", "ci").strip()
    with cluster.b.http(token=token) as client:
        assert client.get("/v1/account").json()["username"] == "carol"
    [listed] = cli("token", "list", "--username", "carol").splitlines()
    token_id = listed.split("\t")[0]
    assert "ci" in listed and "active" in listed
    cli("token", "revoke", token_id, "--username", "carol")
    assert "Set the password" in cli("password", "carol", "--password", "a-long-password")
    assert not elsewhere.exists()  # nothing was written to a data folder
    deadline = time.monotonic() + 10  # the API caches tokens for a few seconds
    with cluster.a.http(token=token) as client:
        while client.get("/v1/account").status_code != 401:
            assert time.monotonic() < deadline, "the revoked token still works"
            time.sleep(0.2)


def test_a_second_serve_on_an_sqlite_folder_in_use_refuses(
    tls: Tls, tmp_path_factory: pytest.TempPathFactory
) -> None:
    first = LiveServer(data_dir=tmp_path_factory.mktemp("sqlite"), tls=tls).start()
    try:
        second = subprocess.run(
            [_modelyard(), "serve", "--data-dir", str(first.data_dir), "--port", str(free_port()),
             "--no-catalog"],
            check=False, capture_output=True, text=True, env=_env(), timeout=60,
        )  # fmt: skip
        assert second.returncode == 1
        [line] = second.stderr.strip().splitlines()
        assert "another modelyard serve" in line and str(first.process.pid) in line, line
        with first.http() as client:  # the first one goes on, untouched
            assert client.get("/v1/predictions").status_code == 200
    finally:
        first.stop()
