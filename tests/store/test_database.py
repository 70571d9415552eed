"""The store on both databases it supports: SQLite (embedded) and PostgreSQL (by URL alone).

The PostgreSQL tests use the local server (trust auth) in a schema of their own and clean it up.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from modelyard.store.accounts import authenticate, create_account, ensure_admin, issue_token
from modelyard.store.database import Database, sqlite_url
from modelyard.store.models import add_version, create_model, versions_by_id
from modelyard.store.predictions import (
    NewEvent,
    NewPrediction,
    PredictionFilter,
    append_events,
    create_prediction,
    events_after,
    list_predictions,
    unfinished,
)
from modelyard.store.tables import Base

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _postgres_available() -> bool:
    try:
        with create_engine(POSTGRES).connect() as connection:
            connection.execute(text("select 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means: not here
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(sqlite_url(tmp_path / "store.db"))
        database.migrate()
        yield database
        database.dispose()
        return
    if not _postgres_available():
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (the CI machine has it)")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    database = Database(f"{POSTGRES}?options=-csearch_path%3D{schema}")
    database.migrate()
    try:
        yield database
    finally:
        database.dispose()
        with admin.connect() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_migrations_match_the_tables(db: Database) -> None:
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
    db.migrate()  # idempotent


def test_tokens_authenticate_until_revoked(db: Database) -> None:
    with db.session() as session:
        issued = ensure_admin(session)
        assert issued is not None
        assert ensure_admin(session) is None  # only on first start
    with db.session() as session:
        account = authenticate(session, issued.token)
        assert account is not None and account.username == "admin" and account.is_admin
        assert authenticate(session, issued.token + "x") is None
        assert account.webhook_secret.startswith("whsec_")
        assert "_" not in account.webhook_secret.removeprefix("whsec_")


def test_event_log_projects_onto_the_prediction(db: Database) -> None:
    with db.session() as session:
        owner = create_account(session, "alice")
        model = create_model(session, owner, "echo")
        version, created = add_version(
            session, model.model, version_id="a" * 64, package_key="b" * 64,
            cog_version="0.16.12", openapi_schema={"components": {}},
        )  # fmt: skip
        assert created
        again, created = add_version(
            session, model.model, version_id="a" * 64, package_key="b" * 64,
            cog_version="0.16.12", openapi_schema={},
        )  # fmt: skip
        assert not created and again.pk == version.pk
        prediction = create_prediction(
            session,
            NewPrediction(
                account_id=owner.id, model_id=model.model.id, model_ref=model.ref,
                version_pk=version.pk, version_id=version.id, input={"x": 1},
            ),
        )  # fmt: skip
        pid = prediction.id
    with db.session() as session:
        append_events(
            session,
            pid,
            [
                NewEvent("status", {"status": "processing"}),
                NewEvent("logs", "one\n"),
                NewEvent("output", "a"),
                NewEvent("output", "b"),
                NewEvent("metric", {"name": "tokens", "value": 2, "mode": "incr"}),
                NewEvent("metric", {"name": "tokens", "value": 3, "mode": "incr"}),
                NewEvent("done", {"status": "succeeded", "metrics": {"predict_time": 0.5}}),
                NewEvent("logs", "after the end\n"),  # dropped: the log is closed
            ],
        )
    with db.session() as session:
        row = session.get(type(prediction), pid)
        assert row.status == "succeeded" and row.logs == "one\n" and row.output == ["a", "b"]
        assert row.metrics["tokens"] == 5 and row.metrics["predict_time"] == 0.5
        assert row.metrics["total_time"] >= 0 and row.started_at and row.completed_at
        seqs = [e.seq for e in events_after(session, pid, -1)]
        assert seqs == list(range(8))  # 0 (created) .. 7 (done); nothing after done
        assert unfinished(session) == []
        assert [v.id for v, _ in versions_by_id(session, "a" * 64)] == ["a" * 64]
        listed = list_predictions(
            session, PredictionFilter(account_id=owner.id, model_ref="alice/echo"),
            before=None, limit=10,
        )  # fmt: skip
        assert [p.id for p in listed] == [pid]
        assert issue_token(session, owner).token.startswith("r8_")


def test_exclusive_blocks_run_one_at_a_time(db: Database) -> None:
    """`Database.exclusive` (the catalog's registration on replicas starting together): on
    PostgreSQL an advisory lock; on SQLite, where one process owns the database, no lock."""
    import threading
    import time

    inside: list[int] = []
    overlaps: list[int] = []

    def work() -> None:
        with db.exclusive("test-exclusive"):
            inside.append(1)
            if len(inside) > 1:
                overlaps.append(len(inside))
            time.sleep(0.05)
            inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    if db.shared:
        assert overlaps == []
    with db.exclusive("test-exclusive"):  # released: taken again at once
        pass
