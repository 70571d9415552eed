"""The webhook outbox against crashes and a full disk: the terminal event and its webhook row
commit in one transaction, and each webhook goes out once (at least once across a crash, with
the same `webhook-id`).

Real throughout: a SQLite database (on a small tmpfs when a test fills the disk:
tests/support/fulldisk.py), the real writer, event log and outbox, a real receiver on loopback,
and for the crash a real process killed with SIGKILL while it commits predictions' ends.
Run as a script (`python test_webhook_outbox.py child DIR`), this file is that process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import event
from support.fulldisk import fill, free, small_disk
from webhook_receiver import Receiver

from modelyard.engine import webhooks
from modelyard.engine.eventlog import EventLog
from modelyard.engine.urls import Urls
from modelyard.engine.webhooks import WebhookOutbox
from modelyard.settings import Settings
from modelyard.store.accounts import account_by_username, create_account
from modelyard.store.database import Database
from modelyard.store.models import add_version, create_model, get_model
from modelyard.store.predictions import NewEvent, NewPrediction, create_prediction
from modelyard.store.tables import Prediction, WebhookDelivery
from modelyard.store.webhooks import deliveries_of
from modelyard.store.writer import Writer

pytestmark = pytest.mark.asyncio(loop_scope="session")

WAIT = 30.0  # a hang fails the test after this long; no assertion depends on it
TESTS = Path(__file__).resolve().parents[1]


@dataclass
class Outbox:
    db: Database
    writer: Writer
    log: EventLog
    outbox: WebhookOutbox
    new: NewPrediction

    def create(self, webhook: str) -> Prediction:
        with self.db.session() as session:
            prediction = create_prediction(session, _with(self.new, webhook=webhook))
        self.log.track(prediction)
        return prediction

    def deliveries(self, prediction_id: str) -> list[WebhookDelivery]:
        with self.db.session() as session:
            return deliveries_of(session, prediction_id)

    async def settled(self, prediction_id: str) -> WebhookDelivery:
        """The prediction's one terminal row, once delivered or abandoned."""
        for _ in range(int(WAIT / 0.02)):
            rows = [r for r in self.deliveries(prediction_id) if r.terminal]
            if rows and (rows[0].delivered_at or rows[0].abandoned_at):
                return rows[0]
            await asyncio.sleep(0.02)
        raise AssertionError(self.deliveries(prediction_id))

    async def close(self) -> None:
        await self.outbox.stop()
        await self.log.drain()
        self.writer.stop()
        self.db.dispose()


def _with(new: NewPrediction, **changes: Any) -> NewPrediction:
    return NewPrediction(**{**new.__dict__, **changes})


async def open_outbox(data_dir: Path, *, send: bool = True, **settings: Any) -> Outbox:
    """The outbox on the database in `data_dir` (made, or reopened as after a restart);
    `send=False` stores webhooks without sending any."""
    config = Settings(data_dir=data_dir, **{"webhook_retry_delays": (0.05, 0.1), **settings})
    db = Database(config.db_url)
    db.migrate()
    with db.session() as session:
        account = account_by_username(session, "alice") or create_account(session, "alice")
        model = get_model(session, "alice", "echo") or create_model(session, account, "echo")
        version, _ = add_version(
            session, model.model, version_id="a" * 64, package_key="0" * 64,
            cog_version="0.16.0", openapi_schema={},
        )  # fmt: skip
        new = NewPrediction(
            account_id=account.id, model_id=model.model.id, model_ref="alice/echo",
            version_pk=version.pk, version_id=version.id, input={},
            webhook_events_filter=["completed"],
        )  # fmt: skip
    writer = Writer(db)
    log = EventLog(db, writer)
    outbox = WebhookOutbox(config, db, writer, Urls("https://example.test"), log)
    if send:
        await outbox.start()
    return Outbox(db, writer, log, outbox, new)


def done(output: str) -> NewEvent:
    return NewEvent("done", {"status": "succeeded", "error": None, "metrics": {}, "output": output})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(limit=WAIT).serving() as found:
        yield found


@pytest_asyncio.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    made = await open_outbox(tmp_path)
    try:
        yield made
    finally:
        await made.close()


async def test_the_end_and_its_webhook_are_one_transaction(
    outbox: Outbox, receiver: Receiver
) -> None:
    """Seen from the database connection: the commit that writes the `done` event inserts the
    terminal webhook's row, and no other commit inserts one."""
    transactions: list[list[str]] = []
    open_ones: dict[int, list[str]] = {}

    def begin(connection: Any) -> None:
        open_ones[id(connection)] = []

    def execute(connection: Any, _c: Any, statement: str, parameters: Any, *_: Any) -> None:
        open_ones.setdefault(id(connection), []).append(f"{statement} {parameters!r}")

    def commit(connection: Any) -> None:
        transactions.append(open_ones.pop(id(connection), []))

    listeners: list[tuple[str, Callable[..., None]]] = [
        ("begin", begin), ("before_cursor_execute", execute), ("commit", commit),
    ]  # fmt: skip
    for name, listener in listeners:
        event.listen(outbox.db.engine, name, listener)
    try:
        prediction = outbox.create(receiver.url)
        outbox.log.append(prediction.id, NewEvent("status", {"status": "processing"}))
        outbox.log.append(prediction.id, NewEvent("logs", "working\n"), urgent=False)
        outbox.log.append(prediction.id, done("x"))
        row = await outbox.settled(prediction.id)
    finally:
        for name, listener in listeners:
            event.remove(outbox.db.engine, name, listener)
    assert row.delivered_at is not None
    inserting = [t for t in transactions if any("INSERT INTO webhook_deliveries" in s for s in t)]
    assert len(inserting) == 1, inserting
    [together] = inserting
    assert any("INSERT INTO events" in s and "'done'" in s for s in together), together
    assert any(s.startswith("UPDATE predictions") and "'succeeded'" in s for s in together)


async def test_a_crash_at_any_moment_keeps_each_end_with_its_webhook(
    tmp_path: Path, receiver: Receiver
) -> None:
    """A process commits predictions' ends (its outbox stores webhooks, sends none) and is
    killed with SIGKILL mid-stream, three times. Every prediction whose `done` event is stored
    has its terminal row, and none without; the restarted outbox sends each exactly once."""
    database = tmp_path / "modelyard.db"
    for round_ in range(3):
        target = 60 * (round_ + 1)  # ends stored so far; the kill lands wherever it lands
        await asyncio.to_thread(_run_and_kill, tmp_path, receiver.url, target)
        ended, with_rows = _ends(database)
        assert ended == with_rows, ended ^ with_rows
    assert len(ended) >= 180
    restarted = await open_outbox(tmp_path)
    try:
        for prediction_id in ended:
            assert (await restarted.settled(prediction_id)).delivered_at is not None
        counts = Counter(hit.headers["webhook-id"] for hit in receiver.hits)
        assert counts == Counter({f"msg_{p}_completed": 1 for p in ended})
    finally:
        await restarted.close()


def _run_and_kill(data_dir: Path, webhook: str, target: int) -> None:
    """Start the child on `data_dir`; SIGKILL it once `target` ends are stored."""
    database = data_dir / "modelyard.db"
    child = subprocess.Popen(
        [sys.executable, __file__, "child", str(data_dir), webhook],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])},
    )
    try:
        for _ in range(int(WAIT / 0.01)):
            if database.exists() and len(_ends(database)[0]) >= target:
                return
            assert child.poll() is None, "the child stopped on its own"
            time.sleep(0.01)
        raise AssertionError(f"the child stored {len(_ends(database)[0])} ends")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(WAIT)


def _ends(database: Path) -> tuple[set[str], set[str]]:
    """(predictions with a stored `done` event, predictions with a terminal webhook row)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as connection:
        try:
            ended = connection.execute("SELECT prediction_id FROM events WHERE type = 'done'")
            ended_ids = {row[0] for row in ended}
            rows = connection.execute("SELECT prediction_id FROM webhook_deliveries WHERE terminal")
            return ended_ids, {row[0] for row in rows}
        except sqlite3.OperationalError:  # not migrated yet
            return set(), set()


async def _child(data_dir: Path, webhook: str) -> None:
    """The process the crash test kills: ends predictions, eight at a time, for ever."""
    outbox = await open_outbox(data_dir, send=False)
    while True:
        batch = [outbox.create(webhook) for _ in range(8)]
        for prediction in batch:
            outbox.log.append(prediction.id, NewEvent("status", {"status": "processing"}))
        for prediction in batch:
            outbox.log.append(prediction.id, done(prediction.id))
        await asyncio.gather(*(outbox.log.settled(p.id) for p in batch))


class HeldReceiver(Receiver):
    """A receiver that calls `before_answer` (in its thread) before it answers a POST."""

    before_answer: Callable[[], None] = staticmethod(lambda: None)

    def handler(self) -> type[Any]:
        receiver = self
        base = super().handler()

        class Held(base):  # type: ignore[misc, valid-type]
            def do_POST(self) -> None:
                receiver.before_answer()
                super().do_POST()

        return Held


@pytest.fixture
def held() -> Iterator[HeldReceiver]:
    with HeldReceiver(limit=WAIT).serving() as found:
        assert isinstance(found, HeldReceiver)
        yield found


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk", "32m") as folder:
        yield folder


async def test_an_end_on_a_full_disk_is_stored_with_its_webhook_once_there_is_room(
    disk: Path, receiver: Receiver
) -> None:
    outbox = await open_outbox(disk)
    try:
        prediction = outbox.create(receiver.url)
        outbox.log.append(prediction.id, NewEvent("status", {"status": "processing"}))
        assert await outbox.log.settled(prediction.id, WAIT)
        fill(disk, (disk / "modelyard.db",))
        outbox.log.append(prediction.id, done("kept"))
        for _ in range(int(WAIT / 0.02)):  # until the writer has been refused twice
            if outbox.log.retries(prediction.id) >= 2:
                break
            await asyncio.sleep(0.02)
        assert outbox.log.retries(prediction.id) >= 2
        assert outbox.deliveries(prediction.id) == []
        free(disk)
        row = await outbox.settled(prediction.id)
        assert row.delivered_at is not None and row.attempts == 1
        [hit] = receiver.wait_for(lambda hits: len(hits) == 1)
        assert hit.json()["status"] == "succeeded" and hit.json()["output"] == "kept"
    finally:
        free(disk)
        await outbox.close()


async def test_a_delivery_is_not_sent_again_while_the_disk_stays_full(
    disk: Path, held: HeldReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills as the receiver answers, so recording the try fails, for longer than the
    claim lasts and than the recording's retry schedule: the webhook is still sent once."""
    monkeypatch.setattr(webhooks, "LEASE_MARGIN", 0.2)  # the claim runs out within the test
    monkeypatch.setattr(webhooks, "SETTLE_RETRY_DELAYS", (0.05, 0.1))
    outbox = await open_outbox(disk, webhook_timeout=1.0)
    filled = threading.Event()

    def fill_once() -> None:
        if not filled.is_set():
            fill(disk, (disk / "modelyard.db",))
            filled.set()

    held.before_answer = fill_once
    try:
        prediction = outbox.create(held.url)
        outbox.log.append(prediction.id, done("once"))
        await asyncio.to_thread(held.wait_for, lambda hits: len(hits) == 1)
        await asyncio.sleep(1.0 + 0.2 + 1.0)  # past the claim and the retry schedule
        [row] = outbox.deliveries(prediction.id)
        assert row.delivered_at is None  # the record of the try cannot be written yet
        free(disk)
        row = await outbox.settled(prediction.id)
        assert row.delivered_at is not None and row.attempts == 1
        await asyncio.sleep(2 * webhooks.POLL)  # the sender looks at the outbox again meanwhile
        assert len(held.hits) == 1
    finally:
        free(disk)
        await outbox.close()


async def test_stop_lets_a_try_in_flight_finish_instead_of_sending_it_again(
    tmp_path: Path, held: HeldReceiver
) -> None:
    """A shutdown while the receiver is answering: the try ends and is recorded, so the
    restarted outbox does not send the webhook a second time."""
    arrived, answer = threading.Event(), threading.Event()

    def hold() -> None:
        arrived.set()
        assert answer.wait(WAIT)

    held.before_answer = hold
    first = await open_outbox(tmp_path)
    prediction = first.create(held.url)
    first.log.append(prediction.id, done("once"))
    assert await asyncio.to_thread(arrived.wait, WAIT)
    stopping = asyncio.create_task(first.close())
    await asyncio.sleep(0.2)  # the stop has begun and waits for the try
    answer.set()
    await asyncio.wait_for(stopping, WAIT)
    [row] = first.deliveries(prediction.id)
    assert row.delivered_at is not None
    second = await open_outbox(tmp_path)
    try:
        await asyncio.sleep(2 * webhooks.POLL)
        assert len(held.hits) == 1
    finally:
        await second.close()


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    asyncio.run(_child(Path(sys.argv[2]), sys.argv[3]))
