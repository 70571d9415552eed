"""Data retention (engine/retention.py, store/retention.py) on a real SQLite file and on the local
PostgreSQL: what a removal takes (input, output, logs, data events, output files and their blobs)
and keeps (ids, status, metrics, timestamps), what it never touches (running predictions, pending
webhooks, examples, shared ones, web-made ones under their own setting), batches, a second sweep
that finds nothing, and two replicas sweeping one database at once.

The clock is the `now` passed to the sweep, set past each prediction's own `completed_at`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from support.postgres import fresh_database

from modelyard.engine import retention
from modelyard.engine.retention import remove_expired_data, sweep
from modelyard.engine.urls import Urls
from modelyard.engine.views import prediction_json
from modelyard.platform import build_platform
from modelyard.settings import Settings
from modelyard.store.accounts import create_account
from modelyard.store.blobs import BlobStore
from modelyard.store.database import Database
from modelyard.store.files import NewFile, add_file
from modelyard.store.models import add_version, create_model
from modelyard.store.predictions import NewEvent, NewPrediction, append_events, create_prediction
from modelyard.store.tables import Event, File, Prediction, WebhookDelivery, utcnow
from modelyard.store.webhooks import NewDelivery, enqueue

HOUR = 3600.0


@dataclass
class World:
    settings: Settings
    db: Database
    blobs: BlobStore
    new: NewPrediction  # the account, model and version every prediction here uses

    def sweep(self, now: datetime, **settings: Any) -> list[str]:
        config = replace(self.settings, **settings) if settings else self.settings
        return remove_expired_data(config, self.db, self.blobs, now)


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    if request.param == "sqlite":
        yield from _world(tmp_path, None)
    else:
        with fresh_database("retention") as url:
            yield from _world(tmp_path, url)


def _world(tmp_path: Path, url: str | None) -> Iterator[World]:
    settings = Settings(data_dir=tmp_path, database_url=url, data_retention=HOUR)
    db = Database(settings.db_url)
    db.migrate()
    try:
        yield World(settings, db, BlobStore(settings.blob_dir), _owner(db))
    finally:
        db.dispose()


def _owner(db: Database) -> NewPrediction:
    """An account, a model and a version: what every prediction here is made of."""
    with db.session() as session:
        account = create_account(session, "alice")
        model = create_model(session, account, "m")
        version, _ = add_version(
            session, model.model, version_id="a" * 64, package_key="b" * 64,
            cog_version="0.16.12", openapi_schema={},
        )  # fmt: skip
        return NewPrediction(
            account_id=account.id, model_id=model.model.id, model_ref=model.ref,
            version_pk=version.pk, version_id=version.id, input={"prompt": "a secret"},
        )  # fmt: skip


def _prediction(
    world: World, *, source: str = "api", finish: bool = True, data: bytes = b"an image"
) -> str:
    """A prediction that ran, logged, wrote an output file (blob `data`) and, with `finish`,
    succeeded; its id."""
    blob = world.blobs.put_bytes(data)
    with world.db.session() as session:
        prediction = create_prediction(session, replace(world.new, source=source))
    with world.db.session() as session:
        file = add_file(
            session,
            NewFile(world.new.account_id, "out.png", "image/png", "output", prediction.id),
            blob,
        )
        url = f"http://127.0.0.1:8000/delivery/{file.access_key}/out.png"
        events = [
            NewEvent("status", {"status": "processing"}),
            NewEvent("logs", "step 1 of 2\n"),
            NewEvent("output", url),
            NewEvent("metric", {"name": "tokens", "value": 3}),
        ]
        if finish:
            events.append(NewEvent("done", {"status": "succeeded", "output": [url], "metrics": {}}))
        append_events(session, prediction.id, events)
    return prediction.id


def _row(world: World, prediction_id: str) -> Prediction:
    with world.db.session() as session:
        row = session.get(Prediction, prediction_id)
        assert row is not None
        session.expunge(row)
        return row


def _after(world: World, prediction_id: str, seconds: float) -> datetime:
    """`seconds` after the prediction finished (its own recorded time)."""
    completed = _row(world, prediction_id).completed_at
    assert completed is not None
    return completed + timedelta(seconds=seconds)


def _events(world: World, prediction_id: str) -> list[tuple[int, str, Any]]:
    with world.db.session() as session:
        rows = session.execute(
            select(Event.seq, Event.type, Event.data)
            .where(Event.prediction_id == prediction_id)
            .order_by(Event.seq)
        ).all()
        return [(seq, kind, data) for seq, kind, data in rows]


def _files(world: World, prediction_id: str) -> list[str]:
    with world.db.session() as session:
        return list(
            session.scalars(select(File.blob_key).where(File.prediction_id == prediction_id))
        )


def test_a_removal_takes_the_data_and_keeps_the_rest(world: World) -> None:
    pid = _prediction(world)
    before = _row(world, pid)
    [blob_key] = _files(world, pid)
    assert world.blobs.exists(blob_key)

    assert world.sweep(_after(world, pid, HOUR - 1)) == []  # not yet: kept as it was
    assert _row(world, pid).output is not None

    assert world.sweep(_after(world, pid, HOUR)) == [pid]
    after = _row(world, pid)
    assert (after.data_removed, after.input, after.output, after.logs) == (True, {}, None, "")
    for name in ("status", "metrics", "error", "created_at", "started_at", "completed_at"):
        assert getattr(after, name) == getattr(before, name), name
    assert after.metrics["tokens"] == 3 and "predict_time" in after.metrics
    # the log keeps its status and metric events; the done event keeps all but its output
    kinds = [kind for _, kind, _ in _events(world, pid)]
    assert kinds == ["status", "status", "metric", "done"]
    done = _events(world, pid)[-1][2]
    assert done["status"] == "succeeded" and done["output"] is None
    # the output file's record and its bytes are gone
    assert _files(world, pid) == []
    assert not world.blobs.exists(blob_key)
    body = prediction_json(after, Urls("http://127.0.0.1:8000"))
    assert body["data_removed"] is True
    assert (body["input"], body["output"], body["logs"]) == ({}, None, "")
    assert body["status"] == "succeeded" and body["metrics"]["predict_time"] >= 0
    assert body["urls"]["get"].endswith(f"/v1/predictions/{pid}")


def test_a_second_sweep_finds_nothing_and_shared_bytes_stay(world: World) -> None:
    """Idempotent; a blob another prediction's file also stores is kept."""
    old = _prediction(world, data=b"same bytes")
    young = _prediction(world, data=b"same bytes")
    now = _after(world, old, HOUR)
    with world.db.session() as session:  # `young` finished later than the cutoff
        session.execute(update(Prediction).where(Prediction.id == young).values(completed_at=now))
    assert world.sweep(now) == [old]
    assert world.sweep(now) == []
    assert _row(world, old).data_removed and not _row(world, young).data_removed
    [key] = _files(world, young)
    assert world.blobs.exists(key)


def test_running_predictions_are_never_touched(world: World) -> None:
    pid = _prediction(world, finish=False)
    assert world.sweep(utcnow() + timedelta(days=365)) == []
    row = _row(world, pid)
    assert not row.data_removed and row.logs == "step 1 of 2\n" and len(_files(world, pid)) == 1


def test_pending_webhooks_hold_the_data_until_delivered(world: World) -> None:
    pid = _prediction(world)
    with world.db.session() as session:
        enqueue(
            session.connection(),
            NewDelivery(
                "msg_1", pid, world.new.account_id, "http://h/", "completed", b"{...}", True
            ),
        )
    now = _after(world, pid, 10 * HOUR)
    assert world.sweep(now) == []  # the body still has to go out
    assert _row(world, pid).output is not None
    with world.db.session() as session:
        session.execute(update(WebhookDelivery).values(delivered_at=utcnow()))
    assert world.sweep(now) == [pid]
    with world.db.session() as session:  # the delivered body was a copy of the data
        assert session.scalar(select(WebhookDelivery.body)) == b""


def test_web_predictions_follow_their_own_setting(world: World) -> None:
    api = _prediction(world)
    web = _prediction(world, source="web", data=b"web bytes")
    now = _after(world, web, 2 * HOUR)
    assert world.sweep(now) == [api]  # web_data_retention None: web-made ones are kept
    assert not _row(world, web).data_removed
    assert world.sweep(now, web_data_retention=3 * HOUR) == []
    assert world.sweep(now, web_data_retention=2 * HOUR) == [web]
    assert world.sweep(now + timedelta(days=9), data_retention=None) == []  # nothing left


def test_examples_and_shared_predictions_are_kept(world: World) -> None:
    example, shared = _prediction(world), _prediction(world, data=b"other")
    with world.db.session() as session:
        session.execute(update(Prediction).where(Prediction.id == example).values(is_example=True))
        session.execute(update(Prediction).where(Prediction.id == shared).values(is_public=True))
    assert world.sweep(utcnow() + timedelta(days=365)) == []


def test_no_retention_configured_removes_nothing(world: World) -> None:
    _prediction(world)
    assert world.sweep(utcnow() + timedelta(days=365), data_retention=None) == []


def test_a_sweep_is_bounded_in_batches(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "BATCH", 2)
    monkeypatch.setattr(retention, "BATCHES", 2)
    ids = [_prediction(world, data=bytes([i])) for i in range(5)]
    now = _after(world, ids[-1], HOUR)
    first = world.sweep(now)
    assert len(first) == 4 and first == ids[:4]  # oldest finish first
    assert world.sweep(now) == ids[4:]
    assert all(_row(world, pid).data_removed for pid in ids)


def test_two_replicas_sweeping_at_once_remove_each_prediction_once(world: World) -> None:
    """Each replica has its own Database (connection pool); both sweep together, neither fails,
    and every prediction is removed by exactly one of them."""
    ids = [_prediction(world, data=bytes([i])) for i in range(12)]
    now = _after(world, ids[-1], HOUR)
    other = Database(world.settings.db_url)
    start = threading.Barrier(2)

    def sweep(db: Database) -> list[str]:
        start.wait()
        return remove_expired_data(world.settings, db, world.blobs, now)

    try:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(sweep, [world.db, other]))
    finally:
        other.dispose()
    removed = [pid for result in results for pid in result]
    assert sorted(removed) == sorted(ids)  # all of them, none twice
    assert world.sweep(now) == []


async def test_the_engines_sweep_removes_data_and_expired_files(tmp_path: Path) -> None:
    """`sweep(engine)`, what the engine's periodic task runs, on a platform as `serve` builds it
    (not started): retention 0 removes what finished before now, and expired uploads go too."""
    settings = Settings(data_dir=tmp_path, data_retention=0.0, gpus="none", file_expiry=-1.0)
    platform = build_platform(settings)
    try:
        world = World(settings, platform.db, platform.blobs, _owner(platform.db))
        pid = _prediction(world)
        upload = platform.engine.files.save_upload(
            world.new.account_id, "in.txt", "text/plain", {}, platform.blobs.put_bytes(b"upload")
        )
        await sweep(platform.engine)
        assert _row(world, pid).data_removed and _files(world, pid) == []
        with platform.db.session() as session:
            assert session.get(File, upload.id) is None
    finally:
        platform.db.dispose()
