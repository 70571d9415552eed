"""The store's side of API replicas on one PostgreSQL database (store/replicas.py, listener.py,
database.py): migrations under an advisory lock, leases that never come back once expired,
claims that two replicas never both win, the webhook outbox's claim under the same race,
LISTEN/NOTIFY that follows transactions and survives a dropped connection, and the SQLite lock.

Every test gets a fresh database on the local PostgreSQL (support/postgres.py), dropped after.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from support.postgres import fresh_database

from modelyard.store.accounts import create_account
from modelyard.store.database import Database, DatabaseInUse, hold_sqlite, sqlite_url
from modelyard.store.listener import Listener
from modelyard.store.models import add_version, create_model
from modelyard.store.predictions import NewPrediction, create_prediction
from modelyard.store.replicas import (
    EVENTS_CHANNEL,
    claim,
    claim_orphans,
    lease_of,
    notify,
    orphans,
    owner_alive,
    reclaim,
    register,
    renew,
    retire,
)
from modelyard.store.tables import utcnow
from modelyard.store.webhooks import NewDelivery, enqueue
from modelyard.store.webhooks import claim as claim_delivery

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_database("leases") as made:
        yield made


@pytest.fixture
def db(url: str) -> Iterator[Database]:
    database = Database(url)
    database.migrate()
    yield database
    database.dispose()


def _predictions(db: Database, count: int, owner: str | None = None) -> list[str]:
    """`count` unfinished predictions (owned by `owner`), oldest first."""
    with db.session() as session:
        account = create_account(session, f"u{time.monotonic_ns()}")
        model = create_model(session, account, "m")
        version, _ = add_version(
            session, model.model, version_id="a" * 64, package_key="b" * 64,
            cog_version="0.16.12", openapi_schema={},
        )  # fmt: skip
        new = NewPrediction(
            account_id=account.id, model_id=model.model.id, model_ref=model.ref,
            version_pk=version.pk, version_id=version.id, input={},
        )  # fmt: skip
        return [create_prediction(session, new, owner=owner).id for _ in range(count)]


def _at_once(workers: int, work: Callable[[int], Any]) -> list[Any]:
    """`work(i)` on `workers` threads released together."""
    start = threading.Barrier(workers)

    def run(i: int) -> Any:
        start.wait()
        return work(i)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, range(workers)))


def test_replicas_migrate_a_fresh_database_at_once(url: str) -> None:
    """Threads and processes that migrate one fresh database together all succeed (without
    the advisory lock, all but one fail creating the same tables)."""
    script = "import sys\nfrom modelyard.store.database import Database\n"
    script += "Database(sys.argv[1]).migrate()"
    processes = [
        subprocess.Popen([sys.executable, "-c", script, url], stderr=subprocess.PIPE)
        for _ in range(4)
    ]

    def migrate(_: int) -> None:
        database = Database(url)
        try:
            database.migrate()
        finally:
            database.dispose()

    _at_once(6, migrate)
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()
    database = Database(url)
    with database.engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    database.dispose()
    assert [v for (v,) in versions] == ["0007_metering"]


def test_an_expired_lease_is_never_renewed(db: Database) -> None:
    with db.engine.begin() as connection:
        register(connection, "ra", 0.6)
        register(connection, "rb", 30.0)
    with db.engine.begin() as connection:
        assert renew(connection, "ra", 0.6)
    with db.session() as session:
        assert owner_alive(session, "ra") and owner_alive(session, "rb")
        assert not owner_alive(session, "nobody") and not owner_alive(session, None)
        expires = lease_of(session, "ra")
        assert expires is not None and expires - utcnow() <= timedelta(seconds=0.6)
    time.sleep(0.8)
    with db.engine.begin() as connection:
        assert not renew(connection, "ra", 30.0)  # too late: it may have lost its predictions
    with db.session() as session:
        assert not owner_alive(session, "ra") and owner_alive(session, "rb")
    with db.engine.begin() as connection:
        retire(connection, "rb")
    with db.session() as session:
        assert not owner_alive(session, "rb") and lease_of(session, "rb") is None


def test_orphans_are_those_of_nobody_or_of_the_dead(db: Database) -> None:
    with db.engine.begin() as connection:
        register(connection, "alive", 30.0)
        register(connection, "dying", 0.3)
    mine = _predictions(db, 2, owner="alive")
    dying = _predictions(db, 2, owner="dying")
    nobody = _predictions(db, 1)
    with db.session() as session:
        assert {p for p, _ in orphans(session)} == set(nobody)
    time.sleep(0.5)
    with db.session() as session:
        assert {p for p, _ in orphans(session)} == set(dying + nobody)
        taken = claim_orphans(session, "alive")
        assert [p.id for p in taken] == dying + nobody  # oldest first
        assert {p.owner for p in taken} == {"alive"}
        assert lease_of(session, "dying") is None  # expired rows are swept by claims
    with db.session() as session:
        assert orphans(session) == []
        assert claim(session, mine[0], "dying", "alive") is None  # not its owner any more


def test_two_replicas_claiming_together_never_both_win(db: Database) -> None:
    """Eight replicas claim 200 orphans at the same moment: each is taken exactly once."""
    ids = _predictions(db, 200)

    def claim_all(i: int) -> list[str]:
        with db.session() as session:
            return [p.id for p in claim_orphans(session, f"r{i}")]

    results = _at_once(8, claim_all)
    taken = [p for result in results for p in result]
    assert sorted(taken) == sorted(ids)  # every one, none twice
    with db.session() as session:
        owners = dict(session.execute(text("SELECT id, owner FROM predictions")).all())
    assert all(owners[p] == f"r{i}" for i, result in enumerate(results) for p in result)


def test_a_rejoining_replica_takes_back_only_what_is_still_its_own(db: Database) -> None:
    ids = _predictions(db, 3, owner="old")
    with db.session() as session:
        assert claim(session, ids[0], "old", "other") is not None
    later = _predictions(db, 1, owner="new")  # created under the new id meanwhile
    with db.session() as session:
        kept = reclaim(session, [*ids, *later], "old", "new")
    assert kept == {ids[1], ids[2], later[0]}


def test_a_webhook_try_is_claimed_by_one_sender_only(db: Database) -> None:
    """The outbox's conditional UPDATE under PostgreSQL's concurrency: eight senders (as in
    eight replicas) race for each of 50 due rows, and each row is taken once."""
    [prediction_id] = _predictions(db, 1)
    with db.session() as session:
        account_id = session.execute(text("SELECT account_id FROM predictions")).scalar_one()
    with db.engine.begin() as connection:
        for n in range(50):
            enqueue(connection, NewDelivery(
                message_id=f"msg_{n}", prediction_id=prediction_id, account_id=account_id,
                url="http://127.0.0.1:9/hook", event="completed", body=b"{}", terminal=True,
            ))  # fmt: skip
    with db.session() as session:
        rows = [r for (r,) in session.execute(text("SELECT id FROM webhook_deliveries")).all()]
    now = utcnow()

    def race(_: int) -> list[int]:
        won = []
        for row in rows:
            with db.session() as session:
                if claim_delivery(session, row, now=now, lease=40.0):
                    won.append(row)
        return won

    won = [row for result in _at_once(8, race) for row in result]
    assert sorted(won) == sorted(rows)


class _Heard:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.states: list[bool] = []
        self.changed = threading.Condition()

    def deliver(self, channel: str, payload: str) -> None:
        with self.changed:
            self.items.append((channel, payload))
            self.changed.notify_all()

    def connected(self, up: bool) -> None:
        with self.changed:
            self.states.append(up)
            self.changed.notify_all()

    def wait(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        with self.changed:
            assert self.changed.wait_for(done, timeout), (self.items, self.states)


def test_notifications_follow_transactions_and_survive_a_dropped_connection(
    db: Database, url: str
) -> None:
    heard = _Heard()
    listener = Listener(url, [EVENTS_CHANNEL], heard.deliver, heard.connected)
    listener.start()
    try:
        assert listener.wait_ready(10)
        with pytest.raises(RuntimeError), db.engine.begin() as connection:
            notify(connection, EVENTS_CHANNEL, "rolled-back")
            raise RuntimeError("rollback")
        with db.engine.begin() as connection:
            notify(connection, EVENTS_CHANNEL, "p1")
        heard.wait(lambda: (EVENTS_CHANNEL, "p1") in heard.items)
        assert (EVENTS_CHANNEL, "rolled-back") not in heard.items
        with db.engine.begin() as connection:  # the listener's session ends, as in a failover
            connection.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'modelyard-listen' AND datname = current_database()"
            ))  # fmt: skip
        heard.wait(lambda: heard.states[-2:] == [False, True])
        assert listener.wait_ready(10)
        with db.engine.begin() as connection:
            notify(connection, EVENTS_CHANNEL, "p2")
        heard.wait(lambda: (EVENTS_CHANNEL, "p2") in heard.items)
    finally:
        listener.stop()


def test_a_sqlite_database_is_held_by_one_server(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "modelyard.db")
    held = hold_sqlite(url)
    assert held is not None
    with pytest.raises(DatabaseInUse, match="another modelyard serve"):
        hold_sqlite(url)
    held.close()  # the process ended, in effect
    again = hold_sqlite(url)
    assert again is not None
    again.close()
    assert hold_sqlite("postgresql+psycopg://postgres@127.0.0.1/x") is None
