"""The store on a disk that is really full (a small tmpfs: tests/support/fulldisk.py).

What a full disk does to SQLite, the one writer and the blob store, and that `out_of_space`
recognises it in every shape it arrives in; a terminal event and its webhook row, written as
the event log writes them, commit together or not at all.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import psycopg.errors
import pytest
from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from support.fulldisk import fill, free, small_disk

from modelyard.store.accounts import create_account
from modelyard.store.blobs import BlobStore
from modelyard.store.database import Database, sqlite_url
from modelyard.store.models import add_version, create_model
from modelyard.store.predictions import (
    NewEvent,
    NewPrediction,
    create_prediction,
    project,
    projected_state,
    write_events,
)
from modelyard.store.space import NO_SPACE, NoSpaceLeft, out_of_space
from modelyard.store.tables import Event, Prediction, WebhookDelivery
from modelyard.store.webhooks import NewDelivery, enqueue
from modelyard.store.writer import Writer

WAIT = 30.0  # a hang fails the test after this long; no assertion depends on it


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk", "16m") as folder:
        yield folder


@pytest.fixture
def db(disk: Path) -> Iterator[Database]:
    database = Database(sqlite_url(disk / "modelyard.db"))
    database.migrate()
    try:
        yield database
    finally:
        database.dispose()


def new_prediction(db: Database) -> Prediction:
    with db.session() as session:
        account = create_account(session, "alice")
        model = create_model(session, account, "echo").model
        version, _ = add_version(
            session, model, version_id="a" * 64, package_key="0" * 64, cog_version="0.16.0",
            openapi_schema={},
        )  # fmt: skip
        new = NewPrediction(
            account_id=account.id, model_id=model.id, model_ref="alice/echo",
            version_pk=version.pk, version_id=version.id, input={}, webhook="http://x.test/h",
        )  # fmt: skip
        return create_prediction(session, new)


def the_end(prediction: Prediction) -> tuple[object, object]:
    """What the event log hands the writer for a prediction's end: the events, the projected
    row and the terminal webhook's row, in one job."""
    numbered = project(prediction, [NewEvent("done", {"status": "succeeded", "output": "x"})])
    state = projected_state(prediction)
    delivery = NewDelivery(
        message_id=f"msg_{prediction.id}_completed", prediction_id=prediction.id,
        account_id=prediction.account_id, url="http://x.test/h", event="completed",
        body=b"{}", terminal=True,
    )  # fmt: skip

    def job(connection: Connection) -> bool:
        write_events(connection, state, numbered)
        return enqueue(connection, delivery)

    return job, delivery


def stored(db: Database, prediction_id: str) -> tuple[str, int, int]:
    """(status, events, webhook rows) of a prediction, as the database holds them."""
    with db.session() as session:
        row = session.get(Prediction, prediction_id)
        assert row is not None
        count = select(func.count()).select_from
        events = session.scalar(count(Event).where(Event.prediction_id == prediction_id))
        rows = session.scalar(
            count(WebhookDelivery).where(WebhookDelivery.prediction_id == prediction_id)
        )
        return row.status, events or 0, rows or 0


def test_an_end_and_its_webhook_commit_together_or_not_at_all(disk: Path, db: Database) -> None:
    prediction = new_prediction(db)
    job, _ = the_end(prediction)
    writer = Writer(db)
    try:
        fill(disk, (disk / "modelyard.db",))
        with pytest.raises(OperationalError) as refused:
            writer.submit(job).result(WAIT)  # type: ignore[arg-type]
        assert out_of_space(refused.value)
        assert stored(db, prediction.id) == ("starting", 1, 0)  # neither
        free(disk)
        assert writer.submit(job).result(WAIT) is True  # type: ignore[arg-type]
        assert stored(db, prediction.id) == ("succeeded", 2, 1)  # both
    finally:
        writer.stop()


def test_the_blob_store_leaves_nothing_behind_on_a_full_disk(disk: Path) -> None:
    blobs = BlobStore(disk / "blobs")
    fill(disk)
    with pytest.raises(OSError) as refused:
        blobs.put_bytes(b"y" * 100_000)
    assert refused.value.errno == errno.ENOSPC and out_of_space(refused.value)
    assert [p.name for p in (disk / "blobs").rglob("*") if p.is_file()] == []


def test_a_full_disk_is_recognised_in_every_shape(disk: Path, db: Database) -> None:
    fill(disk, (disk / "modelyard.db",))
    with pytest.raises(OSError) as write:
        (disk / "more").write_bytes(b"z" * 10_000)
    with pytest.raises(OperationalError) as commit, db.session() as session:
        create_account(session, "bob")
    wrapped = RuntimeError("storing failed")
    wrapped.__cause__ = commit.value
    for error in (write.value, commit.value, commit.value.orig, wrapped):
        assert out_of_space(error), error
    assert out_of_space(psycopg.errors.DiskFull("could not extend file"))  # PostgreSQL's 53100
    assert out_of_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert str(NoSpaceLeft("the output could not be stored")).startswith(NO_SPACE)
    free(disk)
    with pytest.raises(IntegrityError) as duplicate, db.session() as session:
        create_account(session, "alice")
        create_account(session, "alice")
    for error in (duplicate.value, OSError(errno.ENOENT, "gone"), ValueError("x"), None):
        assert not out_of_space(error), error
