"""Webhooks: a view of the event log that leaves through a persisted outbox (nothing is lost).

What is sent (Replicate's semantics, reference §3.6):
- `start` when the prediction is created, `output` when its output changes, `logs` when its logs
  change, `completed` when it is terminal; only the events in `webhook_events_filter`, and by
  default (no filter, or an empty one) `output` and `completed`, as Replicate documents.
- `output` and `logs` go out at most once per `throttle` seconds per prediction: a change inside
  the window waits for its end, and then the prediction's latest state is sent once.
- The body is the JSON of `GET /v1/predictions/{id}` at that moment, signed with the Standard
  Webhooks scheme and the owning account's `whsec_` secret.

How: every webhook is first stored as a row of `webhook_deliveries` (its body and a message id
that stays the same on every try), then a sender task posts the due rows, one at a time per
prediction so they arrive in order. Intermediate webhooks get one try. The terminal one is tried
again on a network error or any non-2xx answer (redirects are never followed) after each of
`settings.webhook_retry_delays`, then abandoned. Pending rows survive a restart and go out after it.

The terminal webhook's row commits in the transaction of the terminal event (an EventLog
companion, `terminal_writes`), so neither is ever stored without the other. Delivery is at least
once: a try is recorded after the receiver answers, so a crash in between (or a `stop` that cuts
a try short) sends it again after the restart, with the same `webhook-id` for receivers to
deduplicate by. Otherwise it is sent once: while the database refuses the record (a full disk),
recording is retried until it sticks, and the row stays claimed by this process meanwhile.

Every try carries the prediction's W3C trace context (`traceparent`, `tracestate`) when it was
created with one, as Cog's webhooks do; each settled try is reported to `on_outcome` (the
metrics: delivered, retrying or abandoned).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Connection, select
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from modelyard import __version__
from modelyard.settings import Settings
from modelyard.store.database import Database
from modelyard.store.predictions import TERMINAL, NewEvent, get_prediction
from modelyard.store.space import NO_SPACE, out_of_space
from modelyard.store.tables import Prediction, WebhookDelivery, utcnow
from modelyard.store.webhooks import (
    NewDelivery,
    PendingDelivery,
    claim,
    enqueue,
    pending,
    record_attempt,
    release,
)
from modelyard.store.writer import Writer

from .eventlog import EventLog
from .urls import Urls
from .views import prediction_json
from .webhook_post import post

log = logging.getLogger(__name__)

EVENTS = ("start", "output", "logs", "completed")
DEFAULT_EVENTS = frozenset({"output", "completed"})
THROTTLE = 0.5  # seconds between two `output`/`logs` webhooks of one prediction
POLL = 1.0  # rows stored by another process on the same database are seen this late
MAX_IN_FLIGHT = 32
LEASE_MARGIN = 30.0  # seconds a claim outlives the webhook timeout (then another try may go)
# Seconds between tries of recording a try while the database refuses it (the last repeats,
# for as long as it takes: giving up would send a delivered webhook again).
SETTLE_RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)
STOP_GRACE = 5.0  # seconds `stop()` lets tries in flight finish (and be recorded), at most
USER_AGENT = f"Modelyard-Webhooks/{__version__}"
TRACES_KEPT = 4096  # predictions whose trace context is remembered (others: read from SQL)
# What a settled try came to (the `outcome` label of modelyard_webhook_deliveries_total).
DELIVERED, RETRYING, ABANDONED = "delivered", "retrying", "abandoned"
Outcome = Callable[[str, str], None]  # (event, outcome)


def wanted_events(prediction: Prediction) -> frozenset[str]:
    """The events this prediction's webhook asked for."""
    chosen = frozenset(e for e in (prediction.webhook_events_filter or ()) if e in EVENTS)
    return chosen or DEFAULT_EVENTS


def message_id(prediction: Prediction, event: str) -> str:
    """Stable per webhook, so storing it twice (a requeue after a restart, a repeated `done`)
    stores it once, and receivers can deduplicate the terminal webhook's retries."""
    if event in ("start", "completed"):
        return f"msg_{prediction.id}_{event}"
    return f"msg_{prediction.id}_{prediction.last_seq}"


def encode(body: dict[str, Any]) -> bytes:
    """The same bytes FastAPI's JSONResponse would send for this body."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


@dataclass
class _Window:
    """The throttle of one prediction's intermediate webhooks."""

    last_sent: float = float("-inf")
    timer: asyncio.TimerHandle | None = None
    changes: set[str] = field(default_factory=set)  # output/logs changes waiting for the timer


class WebhookOutbox:
    """Turns the event log into stored webhooks, and delivers them."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        writer: Writer,
        urls: Urls,
        event_log: EventLog | None = None,
        *,
        throttle: float = THROTTLE,
    ) -> None:
        self.settings = settings
        self.db = db
        self.writer = writer
        self.urls = urls
        self.throttle = throttle
        self._event_log = event_log
        self._windows: dict[str, _Window] = {}
        self._wakeup = asyncio.Event()
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._sender: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        # prediction id -> its trace context, for the tries of its webhooks (no read per try)
        self._traces: OrderedDict[str, dict[str, str] | None] = OrderedDict()
        self.on_outcome: Outcome | None = None  # told (event, outcome) after each try
        if event_log is not None:
            event_log.add_companion(self.terminal_writes)
            event_log.add_listener(self.on_events)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start sending; rows left pending by an earlier run are due as they were."""
        self._http = httpx.AsyncClient(
            follow_redirects=False,
            timeout=self.settings.webhook_timeout,
            headers={"user-agent": USER_AGENT},
        )
        self._sender = asyncio.create_task(self._send_forever(), name="webhook-outbox")

    async def stop(self) -> None:
        """Stop taking rows; let the tries in flight finish and be recorded (within
        `STOP_GRACE`: a try cut short is sent again after the restart, at least once); give
        back the claims of those that did not."""
        for window in self._windows.values():
            if window.timer is not None:
                window.timer.cancel()
        self._windows.clear()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        if self._in_flight:
            grace = min(STOP_GRACE, self.settings.webhook_timeout)
            await asyncio.wait(list(self._in_flight.values()), timeout=grace)
        claimed = list(self._in_flight)
        for task in list(self._in_flight.values()):
            task.cancel()
        await asyncio.gather(*self._in_flight.values(), return_exceptions=True)
        if claimed:  # unsettled tries are due again at the next start
            try:
                await self.writer.write_session(lambda session: release(session, claimed))
            except SQLAlchemyError as exc:  # a full disk: they are due when their claims lapse
                log.warning("webhook outbox: %d claims not given back (%s)", len(claimed),
                            str(exc).splitlines()[0][:200])  # fmt: skip
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def wake(self) -> None:
        self._wakeup.set()

    # -- from the event log to the outbox ----------------------------------------------------

    def start_delivery(self, prediction: Prediction) -> NewDelivery | None:
        """The `start` webhook, stored in the transaction that stores the prediction."""
        if prediction.webhook and "start" in wanted_events(prediction):
            return self._delivery(prediction, "start")
        return None

    def terminal_writes(
        self, prediction: Prediction, events: list[NewEvent]
    ) -> list[Callable[[Connection], Any]]:
        """EventLog companion: the webhook of a prediction's end, written in the transaction of
        its terminal event, so a crash or a full disk can never keep one without the other."""
        if not prediction.webhook or not any(e.type == "done" for e in events):
            return []
        delivery = self._final_delivery(prediction, events)
        return [] if delivery is None else [lambda connection: enqueue(connection, delivery)]

    def _final_delivery(self, prediction: Prediction, events: list[NewEvent]) -> NewDelivery | None:
        wanted = wanted_events(prediction)
        window = self._windows.pop(prediction.id, None)
        if window is not None and window.timer is not None:
            window.timer.cancel()  # the final body carries the latest state anyway
        if "completed" in wanted:
            return self._delivery(prediction, "completed", terminal=True)
        # No terminal webhook asked for: a final output (non-iterator models have theirs only in
        # `done`) still goes out as an `output` webhook, as Cog sends it.
        final_output = any(
            e.type == "done" and "output" in e.data and not e.data.get("streamed") for e in events
        )
        changes = {"output"} & wanted if final_output else set()
        # Events committed together with the end (the event log groups them) count too.
        changes |= {"output", "logs"} & {e.type for e in events} & wanted
        if window is not None:
            changes |= window.changes
        if not changes:
            return None
        event = "output" if "output" in changes else "logs"
        not_before = None
        if window is not None:  # still throttled: the row waits for the window's end
            wait = window.last_sent + self.throttle - asyncio.get_running_loop().time()
            if wait > 0:
                not_before = utcnow() + timedelta(seconds=wait)
        return self._delivery(prediction, event, not_before=not_before)

    def on_events(self, prediction: Prediction, events: list[NewEvent]) -> None:
        """EventLog listener: runs in the event loop after each commit with the new state."""
        if not prediction.webhook:
            return
        if prediction.status in TERMINAL:
            if any(e.type == "done" for e in events):
                self.wake()  # its final row was committed with it
            return  # anything else came after the end and was not appended
        changes = {"output", "logs"} & {event.type for event in events} & wanted_events(prediction)
        if changes:
            self._throttled(prediction, changes)

    def _throttled(self, prediction: Prediction, changes: set[str]) -> None:
        window = self._windows.setdefault(prediction.id, _Window())
        window.changes |= changes
        if window.timer is not None:
            return  # coalesced: the timer sends the state as it is when the window ends
        loop = asyncio.get_running_loop()
        wait = window.last_sent + self.throttle - loop.time()
        if wait <= 0:
            self._flush(prediction.id, prediction)
        else:
            window.timer = loop.call_later(wait, self._flush, prediction.id, None)

    def _flush(self, prediction_id: str, prediction: Prediction | None) -> None:
        window = self._windows.get(prediction_id)
        if window is None:
            return
        window.timer = None
        if prediction is None:
            prediction = self._latest(prediction_id)
            if prediction is None or prediction.status in TERMINAL:
                # Over (perhaps not committed yet): its end's webhook carries this change, and
                # an intermediate one must not announce an end before it is stored.
                self._windows.pop(prediction_id, None)
                return
        event = "output" if "output" in window.changes else "logs"
        window.changes = set()
        window.last_sent = asyncio.get_running_loop().time()
        self._store(prediction, event)

    def _latest(self, prediction_id: str) -> Prediction | None:
        """The newest state: the event log's (it may hold events not yet committed), else SQL."""
        if self._event_log is not None:
            return self._event_log.snapshot(prediction_id)
        with self.db.session() as session:
            return get_prediction(session, prediction_id)

    def _delivery(
        self,
        prediction: Prediction,
        event: str,
        *,
        terminal: bool = False,
        not_before: datetime | None = None,
    ) -> NewDelivery:
        """The webhook as a row: its body is the prediction's JSON as of now."""
        self._remember_trace(prediction.id, prediction.trace_context)
        return NewDelivery(
            message_id=message_id(prediction, event),
            prediction_id=prediction.id,
            account_id=prediction.account_id,
            url=prediction.webhook or "",
            event=event,
            body=encode(prediction_json(prediction, self.urls)),
            terminal=terminal,
            not_before=not_before,
        )

    def _store(self, prediction: Prediction, event: str) -> None:
        """Write an intermediate webhook to the outbox, then wake the sender."""
        new = self._delivery(prediction, event)

        def stored(future: Future[bool]) -> None:
            if future.exception() is not None:  # intermediate webhooks get one chance
                log.warning("webhook of %s: storing it failed: %s", new.prediction_id,
                            future.exception())  # fmt: skip
            elif future.result():
                self.wake()

        self.writer.submit_then(lambda connection: enqueue(connection, new), stored)

    # -- from the outbox to the receivers ----------------------------------------------------

    async def _send_forever(self) -> None:
        while True:
            self._wakeup.clear()  # before reading, so a wake during the read is not lost
            try:
                wait = await self._dispatch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if out_of_space(exc):  # claiming a row writes: it waits for space, quietly
                    log.warning("webhook outbox: %s; deliveries wait for space", NO_SPACE)
                else:
                    log.exception("webhook outbox: reading pending deliveries failed")
                wait = POLL
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives as
            # the wake-up does, and stop() would then wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(wait, POLL)):
                    await self._wakeup.wait()

    async def _dispatch(self) -> float:
        """Start a try for every due row that heads its prediction's queue; returns the seconds
        until the next row becomes due."""
        now = utcnow()
        rows = await asyncio.to_thread(self._pending)
        heads: dict[str, PendingDelivery] = {}
        for row in rows:
            heads.setdefault(row.prediction_id, row)  # later rows wait: webhooks arrive in order
        wait = POLL
        for row in heads.values():
            if row.id in self._in_flight:
                continue
            if row.next_attempt_at > now:
                wait = min(wait, (row.next_attempt_at - now).total_seconds())
                continue
            if len(self._in_flight) >= MAX_IN_FLIGHT:
                break
            lease = self.settings.webhook_timeout + LEASE_MARGIN  # due again if we die mid-try
            claimed = await self.writer.write_session(
                functools.partial(claim, delivery_id=row.id, now=now, lease=lease)
            )
            if not claimed:
                continue  # another process took it
            task = asyncio.create_task(self._attempt(row), name=f"webhook-{row.message_id}")
            self._in_flight[row.id] = task
        return max(wait, 0.0)

    def _pending(self) -> list[PendingDelivery]:
        with self.db.session() as session:
            return pending(session)

    async def _attempt(self, row: PendingDelivery) -> None:
        try:
            try:
                assert self._http is not None, "the outbox was not started"
                error, retry = await post(
                    self._http,
                    row,
                    allow_private=self.settings.allow_private_urls,
                    trace=await self._trace_of(row.prediction_id),
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # counted as a failed try, so a bad row cannot loop forever
                log.exception("webhook %s: the try failed unexpectedly", row.message_id)
                error, retry = f"{type(exc).__name__}: {exc}", True
            outcome = await self._settle(row, error, retry)
            if outcome is not None and self.on_outcome is not None:
                self.on_outcome(row.event, outcome)
            if error is not None:
                log.info("webhook %s to %s: %s", row.message_id, row.url, error)
        except asyncio.CancelledError:
            raise
        except Exception:  # the claim runs out and the row is tried again then
            log.exception("webhook %s: settling the try failed", row.message_id)
        finally:
            self._in_flight.pop(row.id, None)
            self.wake()

    async def _settle(self, row: PendingDelivery, error: str | None, retry: bool) -> str | None:
        """Record the try, retrying for as long as the database cannot take it (a full disk, a
        lost connection: an OperationalError): a delivered webhook whose record is lost would be
        sent again when its claim runs out. The row stays in flight meanwhile, so this process
        does not send it again (only `stop` ends the wait; the row is then sent again after the
        restart, at least once). Any other database error ends it after the retry schedule.
        Returns what the try came to (`DELIVERED`, `RETRYING`, `ABANDONED`; None: the row is
        gone with its prediction)."""
        delays = self.settings.webhook_retry_delays
        for failures in itertools.count():
            try:
                return await self.writer.write_session(
                    lambda session: _outcome(
                        record_attempt(
                            session, row.id, error=error, retry_delays=delays, retry=retry
                        )
                    )
                )
            except SQLAlchemyError as exc:
                if failures >= len(SETTLE_RETRY_DELAYS) and not isinstance(exc, OperationalError):
                    raise
                wait = SETTLE_RETRY_DELAYS[min(failures, len(SETTLE_RETRY_DELAYS) - 1)]
                log.warning("webhook %s: recording the try failed (%s); again in %g s",
                            row.message_id, str(exc).splitlines()[0][:200], wait)  # fmt: skip
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # itertools.count() never ends

    # -- trace context ---------------------------------------------------------------------

    def _remember_trace(self, prediction_id: str, context: dict[str, str] | None) -> None:
        self._traces[prediction_id] = context
        self._traces.move_to_end(prediction_id)
        while len(self._traces) > TRACES_KEPT:
            self._traces.popitem(last=False)

    async def _trace_of(self, prediction_id: str) -> dict[str, str] | None:
        """The trace context of a webhook's prediction: remembered when its row was made here,
        else (made before a restart, or by another replica) read from SQL, off the loop."""
        if prediction_id in self._traces:
            return self._traces[prediction_id]
        context = await asyncio.to_thread(self._stored_trace, prediction_id)
        self._remember_trace(prediction_id, context)
        return context

    def _stored_trace(self, prediction_id: str) -> dict[str, str] | None:
        with self.db.session() as session:
            return session.scalar(
                select(Prediction.trace_context).where(Prediction.id == prediction_id)
            )


def _outcome(row: WebhookDelivery | None) -> str | None:
    """What a recorded try came to, read inside its transaction."""
    if row is None:
        return None
    if row.delivered_at is not None:
        return DELIVERED
    return ABANDONED if row.abandoned_at is not None else RETRYING
