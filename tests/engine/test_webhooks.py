"""The webhook outbox without an Engine: a real database, the real event log, a real receiver.

The receiver (tests/webhook_receiver.py) is an HTTP server on loopback in a thread; it records
every request and answers with the statuses a test queues. Nothing is mocked: signing is checked
with the official client's `replicate.webhooks.validate` and with `standardwebhooks`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import replicate
from replicate.webhook import WebhookSigningSecret
from sqlalchemy import Connection
from standardwebhooks import Webhook
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
from modelyard.store.webhooks import deliveries_of, enqueue
from modelyard.store.writer import Writer

# The outbox's tasks live on the loop its fixture started it on: the tests share that loop.
pytestmark = pytest.mark.asyncio(loop_scope="session")

WAIT = 30.0  # a hang fails the test after this long; no assertion depends on it


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(limit=WAIT).serving() as found:
        yield found


@dataclass
class Setup:
    db: Database
    writer: Writer
    log: EventLog
    outbox: WebhookOutbox
    account_id: int
    secret: str
    model_id: int
    version_pk: int

    def create(self, webhook: str, events: list[str] | None = None) -> Prediction:
        """What Engine.create does: store the prediction and its `start` webhook together."""
        with self.db.engine.begin() as connection:
            prediction = create_prediction(
                connection,
                NewPrediction(
                    account_id=self.account_id,
                    model_id=self.model_id,
                    model_ref="alice/echo",
                    version_pk=self.version_pk,
                    version_id="a" * 64,
                    input={"text": "hi"},
                    webhook=webhook,
                    webhook_events_filter=events,
                ),
            )
            self.store_start(connection, prediction)
        self.outbox.wake()
        return prediction

    def store_start(self, connection: Connection, prediction: Prediction) -> bool:
        delivery = self.outbox.start_delivery(prediction)
        return delivery is not None and enqueue(connection, delivery)

    def deliveries(self, prediction_id: str) -> list[WebhookDelivery]:
        with self.db.session() as session:
            return deliveries_of(session, prediction_id)


async def make_setup(tmp_path: Path, **overrides: Any) -> Setup:
    """A started outbox on the database in `tmp_path` (made, or reopened as after a restart)."""
    config = Settings(data_dir=tmp_path, **{"webhook_retry_delays": (0.05, 0.1, 0.2), **overrides})
    db = Database(config.db_url)
    db.migrate()
    with db.session() as session:
        account = account_by_username(session, "alice") or create_account(session, "alice")
        model = get_model(session, "alice", "echo") or create_model(session, account, "echo")
        version, _ = add_version(
            session,
            model.model,
            version_id="a" * 64,
            package_key="0" * 64,
            cog_version="0.16.0",
            openapi_schema={},
        )
        ids = (account.id, account.webhook_secret, model.model.id, version.pk)
    writer = Writer(db)
    log = EventLog(db, writer)
    outbox = WebhookOutbox(config, db, writer, Urls("https://example.test"), log)
    await outbox.start()
    return Setup(db, writer, log, outbox, *ids)


async def close(setup: Setup) -> None:
    await setup.outbox.stop()
    await setup.log.drain()
    setup.writer.stop()
    setup.db.dispose()


@pytest_asyncio.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    made = await make_setup(tmp_path)
    try:
        yield made
    finally:
        await close(made)


def done(status: str = "succeeded", **data: Any) -> NewEvent:
    return NewEvent("done", {"status": status, "error": None, "metrics": {}, **data})


async def settled(setup: Setup, prediction_id: str, count: int) -> list[WebhookDelivery]:
    """The prediction's deliveries once `count` of them are delivered or abandoned."""
    for _ in range(int(WAIT / 0.02)):
        rows = setup.deliveries(prediction_id)
        if sum(1 for r in rows if r.delivered_at or r.abandoned_at) >= count:
            return rows
        await asyncio.sleep(0.02)
    raise AssertionError(f"not settled: {setup.deliveries(prediction_id)}")


async def test_webhooks_are_signed_for_both_official_validators(
    setup: Setup, receiver: Receiver
) -> None:
    prediction = setup.create(receiver.url, ["start", "completed"])
    setup.log.append(prediction.id, NewEvent("status", {"status": "processing"}))
    setup.log.append(prediction.id, done(output="hello"))
    hits = await asyncio.to_thread(receiver.wait_for, lambda h: len(h) == 2)
    assert [h.json()["status"] for h in hits] == ["starting", "succeeded"]
    assert hits[1].json()["output"] == "hello" and hits[1].json()["id"] == prediction.id
    for hit in hits:
        assert hit.headers["webhook-id"].startswith("msg_")
        assert hit.headers["webhook-signature"].startswith("v1,")
        assert hit.headers["content-type"] == "application/json"
        assert hit.headers["user-agent"].startswith("Modelyard-Webhooks/")
        secret = WebhookSigningSecret(key=setup.secret)
        replicate.webhooks.validate(headers=hit.headers, body=hit.body.decode(), secret=secret)
        assert Webhook(setup.secret).verify(hit.body, hit.headers)["id"] == prediction.id
    wrong = WebhookSigningSecret(key="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    with pytest.raises(replicate.webhook.InvalidSignatureError):
        replicate.webhooks.validate(
            headers=hits[0].headers, body=hits[0].body.decode(), secret=wrong
        )


async def test_default_filter_sends_output_and_completed_only(
    setup: Setup, receiver: Receiver
) -> None:
    prediction = setup.create(receiver.url)  # no filter: new output and the end (reference §3.6)
    setup.log.append(prediction.id, NewEvent("status", {"status": "processing"}))
    setup.log.append(prediction.id, NewEvent("logs", "working\n"))
    setup.log.append(prediction.id, NewEvent("output", "a"))
    await setup.log.settled(prediction.id)  # committed before the end: its own webhook
    setup.log.append(prediction.id, done(output=["a"], streamed=True))
    rows = await settled(setup, prediction.id, 2)
    assert [r.event for r in rows] == ["output", "completed"]
    assert [r.terminal for r in rows] == [False, True]
    hits = receiver.wait_for(lambda h: len(h) == 2)
    assert [h.json()["output"] for h in hits] == [["a"], ["a"]]
    assert [h.json()["status"] for h in hits] == ["processing", "succeeded"]


async def test_terminal_webhook_is_retried_after_500_with_the_same_id(
    setup: Setup, receiver: Receiver
) -> None:
    receiver.answer(500, 502)
    prediction = setup.create(receiver.url, ["completed"])
    setup.log.append(prediction.id, done(output="x"))
    [row] = await settled(setup, prediction.id, 1)
    assert row.delivered_at is not None and row.attempts == 3
    assert row.last_error is None
    hits = receiver.hits
    assert len(hits) == 3 and len({h.headers["webhook-id"] for h in hits}) == 1
    assert len({h.body for h in hits}) == 1  # the body stored before the first try


async def test_redirects_are_not_followed_and_count_as_failures(
    setup: Setup, receiver: Receiver
) -> None:
    receiver.answer(307, 301)
    prediction = setup.create(receiver.url, ["completed"])
    setup.log.append(prediction.id, done(status="failed", error="boom"))
    [row] = await settled(setup, prediction.id, 1)
    assert row.delivered_at is not None and row.attempts == 3
    assert [h.path for h in receiver.hits] == ["/hook", "/hook", "/hook"]  # /moved never hit
    assert receiver.hits[-1].json()["error"] == "boom"


async def test_terminal_webhook_is_abandoned_after_the_last_delay(
    setup: Setup, receiver: Receiver
) -> None:
    receiver.default = 500
    prediction = setup.create(receiver.url, ["completed"])
    setup.log.append(prediction.id, done(status="canceled"))
    [row] = await settled(setup, prediction.id, 1)
    assert row.abandoned_at is not None and row.delivered_at is None
    assert row.attempts == 1 + 3  # the first try, then one per delay
    assert row.last_error == "HTTP 500"
    assert len(receiver.hits) == 4


async def test_intermediate_webhooks_get_one_try(setup: Setup, receiver: Receiver) -> None:
    receiver.answer(500)
    prediction = setup.create(receiver.url, ["start", "completed"])
    setup.log.append(prediction.id, done(output="x"))
    start, completed = await settled(setup, prediction.id, 2)
    assert (start.event, start.attempts, start.last_error) == ("start", 1, "HTTP 500")
    assert start.abandoned_at is not None
    assert completed.delivered_at is not None and completed.attempts == 1


async def test_logs_are_coalesced_and_the_last_state_is_sent(
    setup: Setup, receiver: Receiver
) -> None:
    prediction = setup.create(receiver.url, ["logs"])
    lines = [f"line {i}\n" for i in range(50)]
    setup.log.append(prediction.id, NewEvent("logs", lines[0]))
    await setup.log.settled(prediction.id)  # committed: its webhook goes out at once
    for line in lines[1:]:  # no await in between: the throttle's timer cannot fire meanwhile
        setup.log.append(prediction.id, NewEvent("logs", line))
    rows = await settled(setup, prediction.id, 2)
    # The rest wait for the window's end and go as one (a third only if appending 49 lines
    # took longer than one window).
    assert 2 <= len(rows) <= 3 and {r.event for r in rows} == {"logs"}
    await settled(setup, prediction.id, len(rows))
    hits = receiver.wait_for(lambda h: len(h) == len(rows))
    sent = [h.json()["logs"] for h in hits]
    assert sent[0] == lines[0]
    assert sent[-1] == "".join(lines)  # the latest state, once
    assert sent == sorted(sent, key=len)  # in order


async def test_completed_replaces_a_pending_coalesced_webhook(
    setup: Setup, receiver: Receiver
) -> None:
    prediction = setup.create(receiver.url, ["output", "logs", "completed"])
    setup.log.append(prediction.id, NewEvent("output", "a"))
    setup.log.append(prediction.id, NewEvent("output", "b"))  # waits for the window
    setup.log.append(prediction.id, done(output=["a", "b"], streamed=True))
    rows = await settled(setup, prediction.id, 2)
    await asyncio.sleep(setup.outbox.throttle * 2)  # the window's timer would have fired now
    rows = setup.deliveries(prediction.id)
    assert [(r.event, r.terminal) for r in rows] == [("output", False), ("completed", True)]
    hits = receiver.wait_for(lambda h: len(h) == 2)
    assert hits[-1].json()["output"] == ["a", "b"]


async def test_final_output_without_completed_goes_out_as_output(
    setup: Setup, receiver: Receiver
) -> None:
    prediction = setup.create(receiver.url, ["output"])
    setup.log.append(prediction.id, done(output="the answer"))  # a non-iterator model
    [row] = await settled(setup, prediction.id, 1)
    assert (row.event, row.terminal) == ("output", False)
    assert receiver.wait_for(lambda h: len(h) == 1)[0].json()["output"] == "the answer"


async def test_start_is_stored_once_and_nothing_without_a_webhook(
    setup: Setup, receiver: Receiver
) -> None:
    prediction = setup.create(receiver.url, ["start"])
    with setup.db.engine.begin() as connection:  # stored again: the same message id
        assert not setup.store_start(connection, prediction)
    quiet = setup.create(None, None)  # type: ignore[arg-type]
    setup.log.append(quiet.id, done(output="x"))
    [row] = await settled(setup, prediction.id, 1)
    assert row.message_id == f"msg_{prediction.id}_start"
    assert setup.deliveries(quiet.id) == []
    setup.log.append(prediction.id, done(output="x"))  # not asked for
    await asyncio.sleep(0.2)
    assert len(setup.deliveries(prediction.id)) == 1


async def test_pending_terminal_webhook_survives_a_restart(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.default = 503
    first = await make_setup(tmp_path, webhook_retry_delays=(0.05, 60.0))
    prediction = first.create(receiver.url, ["completed"])
    first.log.append(prediction.id, done(output="kept"))
    await settled_attempts(first, prediction.id, 2)  # failed twice; the next try is 60 s away
    await close(first)
    with first.db.session() as session:  # as if the 60 s had passed while the server was down
        row = session.get(WebhookDelivery, first.deliveries(prediction.id)[0].id)
        assert row is not None
        row.next_attempt_at = row.created_at
    receiver.default = 200
    second = await make_setup(tmp_path, webhook_retry_delays=(0.05, 60.0))
    try:
        [row] = await settled(second, prediction.id, 1)
        assert row.delivered_at is not None and row.attempts == 3
        assert receiver.hits[-1].json()["output"] == "kept"
    finally:
        await close(second)


async def settled_attempts(setup: Setup, prediction_id: str, attempts: int) -> None:
    for _ in range(int(WAIT / 0.02)):
        rows = setup.deliveries(prediction_id)
        if rows and rows[0].attempts >= attempts:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(setup.deliveries(prediction_id))


async def test_private_targets_are_refused_when_not_allowed(
    tmp_path: Path, receiver: Receiver
) -> None:
    strict = await make_setup(tmp_path, allow_private_urls=False)
    try:
        prediction = strict.create(receiver.url, ["completed"])
        strict.log.append(prediction.id, done(output="x"))
        [row] = await settled(strict, prediction.id, 1)
        assert row.abandoned_at is not None and row.attempts == 1  # not retried: it cannot pass
        assert "private address" in (row.last_error or "")
        assert receiver.hits == []
    finally:
        await close(strict)


@pytest.mark.parametrize("url", ["https://", "https:///path", "http://[::1"])
async def test_a_url_that_cannot_be_posted_to_is_abandoned_at_once(setup: Setup, url: str) -> None:
    """The API should refuse these; if one is stored anyway, it must not be retried forever."""
    prediction = setup.create(url, ["completed"])
    setup.log.append(prediction.id, done(output="x"))
    [row] = await settled(setup, prediction.id, 1)
    assert row.abandoned_at is not None and row.attempts == 1
    assert (row.last_error or "").startswith("not a valid URL")


@contextmanager
def outbox_refuses_writes(db: Database) -> Iterator[None]:
    """The database refuses every new webhook row (a trigger raising SQLite's full-disk message)
    while the events around it could still be written: the moment a webhook written in a
    transaction of its own is lost."""
    with db.engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TRIGGER full BEFORE INSERT ON webhook_deliveries "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    try:
        yield
    finally:
        with db.engine.begin() as connection:
            connection.exec_driver_sql("DROP TRIGGER full")


def stored_status(setup: Setup, prediction_id: str) -> str:
    with setup.db.session() as session:
        row = session.get(Prediction, prediction_id)
        assert row is not None
        return row.status


async def test_a_full_database_keeps_the_end_and_its_webhook_together(
    setup: Setup, receiver: Receiver
) -> None:
    """The terminal event and its webhook row commit in one transaction: while the database is
    full neither is stored (and nothing is lost: the log retries), then both are, once."""
    prediction = setup.create(receiver.url, ["completed"])
    setup.log.append(prediction.id, NewEvent("status", {"status": "processing"}))
    await setup.log.settled(prediction.id)
    with outbox_refuses_writes(setup.db):
        setup.log.append(prediction.id, done(output="small"))
        for _ in range(int(WAIT / 0.02)):  # until the writer has failed at least twice
            if setup.log.retries(prediction.id) >= 2:
                break
            await asyncio.sleep(0.02)
        assert setup.log.retries(prediction.id) >= 2
        assert stored_status(setup, prediction.id) == "processing"
        assert setup.deliveries(prediction.id) == []
    await asyncio.wait_for(setup.log.settled(prediction.id), WAIT)
    assert stored_status(setup, prediction.id) == "succeeded"
    [row] = await settled(setup, prediction.id, 1)
    assert row.delivered_at is not None and row.attempts == 1
    [hit] = receiver.wait_for(lambda h: len(h) == 1)
    assert hit.json()["status"] == "succeeded"


@contextmanager
def deliveries_cannot_be_settled(db: Database) -> Iterator[None]:
    """The database refuses to mark a webhook delivered (a full disk, as the try is recorded)."""
    with db.engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TRIGGER unsettled BEFORE UPDATE OF delivered_at ON webhook_deliveries "
            "WHEN NEW.delivered_at IS NOT NULL "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    try:
        yield
    finally:
        with db.engine.begin() as connection:
            connection.exec_driver_sql("DROP TRIGGER unsettled")


async def test_a_delivery_that_cannot_be_recorded_is_not_sent_again(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delivered, but the record of it fails: the try is recorded again until it sticks, and
    the webhook is not sent a second time when its claim runs out meanwhile."""
    monkeypatch.setattr(webhooks, "LEASE_MARGIN", 0.2)  # the claim runs out within the test
    setup = await make_setup(tmp_path, webhook_timeout=1.0)
    try:
        prediction = setup.create(receiver.url, ["completed"])
        with deliveries_cannot_be_settled(setup.db):
            setup.log.append(prediction.id, done(output="once"))
            await asyncio.to_thread(receiver.wait_for, lambda h: len(h) == 1)
            await asyncio.sleep(1.0 + 0.2 + 1.0)  # past the claim; the record still fails
            [row] = setup.deliveries(prediction.id)
            assert row.delivered_at is None
        [row] = await settled(setup, prediction.id, 1)
        assert row.delivered_at is not None and row.attempts == 1
        assert len(receiver.hits) == 1
    finally:
        await close(setup)


async def test_a_wait_is_bounded_while_the_end_cannot_be_committed(setup: Setup) -> None:
    """`Prefer: wait` and cancel wait for the end to be stored; while the database refuses it,
    the wait still ends on time, with what the database holds (never an unstored end)."""
    prediction = setup.create(None)  # type: ignore[arg-type]
    with setup.db.engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TRIGGER refused BEFORE INSERT ON events "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    setup.log.append(prediction.id, done(output="x"))
    waited = setup.log.wait_until(prediction.id, lambda p: p.status == "succeeded", timeout=0.5)
    got = await asyncio.wait_for(waited, WAIT)
    assert got is not None and got.status == "starting"
    with setup.db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TRIGGER refused")
    assert await setup.log.settled(prediction.id, WAIT)
    assert stored_status(setup, prediction.id) == "succeeded"
