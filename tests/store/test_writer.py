"""The writer thread on a real SQLite database: order, group commit, one bad job isolated,
answers through futures, and no job accepted once it has stopped."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from modelyard.store.database import Database, sqlite_url
from modelyard.store.writer import Writer


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(sqlite_url(tmp_path / "w.db"))
    with database.engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (n INTEGER PRIMARY KEY, thread TEXT)")
    return database


def insert(n: int):
    def job(connection: Connection) -> int:
        connection.execute(
            text("INSERT INTO t VALUES (:n, :thread)"),
            {"n": n, "thread": threading.current_thread().name},
        )
        return n

    return job


def rows(db: Database) -> list[tuple[int, str]]:
    with db.engine.connect() as connection:
        return [tuple(r) for r in connection.execute(text("SELECT n, thread FROM t ORDER BY n"))]


def test_jobs_commit_in_order_on_the_writer_thread(db: Database) -> None:
    writer = Writer(db, name="the-writer")
    futures = [writer.submit(insert(n)) for n in range(200)]
    assert [f.result(timeout=10) for f in futures] == list(range(200))
    writer.stop()
    assert rows(db) == [(n, "the-writer") for n in range(200)]


def test_a_failing_job_fails_alone(db: Database) -> None:
    """Grouped with others, a job that raises gets its error; the others still commit."""
    writer = Writer(db)
    gate = threading.Event()
    held = writer.submit(lambda connection: gate.wait(10))  # the next ones queue behind it
    good = writer.submit(insert(1))
    bad = writer.submit(insert(1))  # the same key: refused
    also_good = writer.submit(insert(2))
    gate.set()
    assert held.result(timeout=10) is True
    assert good.result(timeout=10) == 1 and also_good.result(timeout=10) == 2
    with pytest.raises(Exception, match="UNIQUE"):
        bad.result(timeout=10)
    writer.stop()
    assert [n for n, _ in rows(db)] == [1, 2]


def test_nothing_is_accepted_once_stopped(db: Database) -> None:
    writer = Writer(db)
    last = writer.submit(insert(7))
    writer.stop()  # what was queued commits first
    assert last.done() and last.result() == 7
    with pytest.raises(RuntimeError, match="stopped"):
        writer.submit(insert(8))
    assert [n for n, _ in rows(db)] == [7]
