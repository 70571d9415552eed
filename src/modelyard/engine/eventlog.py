"""The event log's live side: append (projected at once, persisted by the writer), then wake
everyone who follows it once the events are committed.

Predictions this process runs are kept in memory while they are live (`track`), so appending
reads no database and waiting reads no database. The writer thread commits the events; one
prediction has at most one write in flight, so its events commit in order, and whatever arrives
meanwhile shares the next commit (group commit across predictions too). A terminal event
commits in the same transaction as the rows that depend on it (its webhooks: `add_companion`;
its metering ledger row and cost: engine/metering.py, whose cost is set on the prediction once
that transaction committed).
Followers re-read the database, off the loop, after every wake-up and at least every
`poll_interval`; commits of another API replica wake them by NOTIFY (engine/replicas.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from modelyard.store.database import Database
from modelyard.store.predictions import (
    TERMINAL,
    NewEvent,
    copy_of,
    events_after,
    get_prediction,
    project,
    projected_state,
    write_events,
)
from modelyard.store.tables import Prediction
from modelyard.store.writer import Writer

from .metering import Finish, Metering
from .wakeups import Wakeups

POLL_INTERVAL = 1.0
RECENT = 1024  # finished predictions kept in memory for waiters that wake late
FLUSH_DELAY = 0.005  # seconds a non-urgent event may wait to share a commit
RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)  # after a failed commit (a full disk, a lost database)
DRAIN_TIMEOUT = 10.0
SETTLE_TIMEOUT = 30.0  # seconds a caller waits for its events to be committed, at most

Listener = Callable[[Prediction, list[NewEvent]], None]
# Writes that must commit with a prediction's events (its terminal webhooks), made on the loop.
Companion = Callable[[Prediction, list[NewEvent]], list[Callable[[Connection], Any]]]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoggedEvent:
    seq: int
    type: str
    data: Any
    created_at: datetime


@dataclass
class _Backlog:
    """One prediction's events projected but not committed yet."""

    prediction: Prediction
    numbered: list[tuple[int, NewEvent]] = field(default_factory=list)
    writing: bool = False  # a write of its events is with the writer
    failures: int = 0
    # The writes that commit with its end, made once (a retried end writes the same rows).
    companion_writes: list[Callable[[Connection], Any]] | None = None
    meter: Finish | None = None  # the metering of its end (made with the companion writes)
    settled: list[asyncio.Future[None]] = field(default_factory=list)

    def release_waiters(self) -> None:
        """Its events are committed (or can never be): whoever waits for that goes on."""
        for waiter in self.settled:
            if not waiter.done():
                waiter.set_result(None)


class EventLog:
    """Appends to the persisted log and fans out to waiters and listeners (webhooks)."""

    def __init__(self, db: Database, writer: Writer, metering: Metering | None = None) -> None:
        self.db = db
        self.writer = writer
        self._wakeups = Wakeups()
        self._listeners: list[Listener] = []
        self._companions: list[Companion] = []
        self._live: dict[str, Prediction] = {}  # running here: the newest state, in memory
        self._recent: OrderedDict[str, Prediction] = OrderedDict()  # just finished
        self._backlog: dict[str, _Backlog] = {}
        self._flush_timer: asyncio.TimerHandle | None = None
        self._last_warning = 0.0
        self._retries: set[asyncio.Task[None]] = set()
        self.poll_interval = POLL_INTERVAL  # longer while another replica's NOTIFY wakes us
        # Joins the transaction of every write of a prediction's events (a NOTIFY to replicas).
        self.on_write: Callable[[Connection, str], None] | None = None
        self.metering = metering  # the ledger rows a prediction's end commits with (or none)

    def track(self, prediction: Prediction) -> None:
        """Keep a prediction this process will run in memory until it ends."""
        if prediction.status not in TERMINAL:
            self._live[prediction.id] = prediction

    def add_listener(self, listener: Listener) -> None:
        """Called after each commit with the prediction's state and the events written."""
        self._listeners.append(listener)

    def add_companion(self, companion: Companion) -> None:
        """Asked, before each write, for writes that must share its transaction."""
        self._companions.append(companion)

    def append(self, prediction_id: str, *events: NewEvent, urgent: bool = True) -> Prediction:
        """Project `events` onto the prediction now; hand them to the writer now when `urgent`
        (and always for the final event), else within `FLUSH_DELAY` with whatever else came.

        Grouping matters for speed: a model streaming tokens writes a few per commit, not one
        each. Followers are woken once the events are committed.
        """
        backlog = self._backlog.get(prediction_id)
        prediction = (
            self._live.get(prediction_id)
            or (backlog.prediction if backlog is not None else None)  # not committed yet
            or self._load(prediction_id)
        )
        numbered = project(prediction, list(events))
        if numbered:
            backlog = self._backlog.setdefault(prediction_id, _Backlog(prediction))
            backlog.numbered.extend(numbered)
        if urgent or prediction.status in TERMINAL:
            self.flush()
        elif self._backlog and self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(FLUSH_DELAY, self.flush)
        return prediction

    async def settled(self, prediction_id: str, timeout: float = SETTLE_TIMEOUT) -> bool:
        """Whether every event appended to the prediction so far is committed, waiting for
        that at most `timeout` seconds (commits that keep failing are retried meanwhile)."""
        backlog = self._backlog.get(prediction_id)
        if backlog is None:
            return True
        waiter = asyncio.get_running_loop().create_future()
        backlog.settled.append(waiter)
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await waiter
        except TimeoutError:
            return False
        return True

    def flush(self) -> None:
        """Hand every prediction's waiting events to the writer, unless a write of that
        prediction is in flight (its events follow when it commits, in order)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        for prediction_id, backlog in self._backlog.items():
            if not backlog.writing and backlog.numbered:
                self._write(prediction_id, backlog)

    def _write(self, prediction_id: str, backlog: _Backlog) -> None:
        numbered, backlog.numbered = backlog.numbered, []
        backlog.writing = True
        prediction = backlog.prediction
        events = [event for _, event in numbered]
        state = projected_state(prediction)
        # What listeners and companions see: the state this write commits (the live row goes on
        # changing). Only webhooks look at it, so a prediction without one skips the copy.
        view = copy_of(prediction) if prediction.webhook else prediction
        extra: list[Callable[[Connection], Any]] = []
        if prediction.status in TERMINAL:
            if backlog.companion_writes is None:
                backlog.companion_writes = [
                    write for companion in self._companions for write in companion(view, events)
                ]
                if self.metering is not None:
                    backlog.meter = self.metering.finish(prediction)
                if backlog.meter is not None:
                    backlog.companion_writes.append(backlog.meter)
            extra = backlog.companion_writes
        on_write = self.on_write

        def job(connection: Connection) -> None:
            write_events(connection, state, numbered)
            for write in extra:
                write(connection)
            if on_write is not None:
                on_write(connection, prediction_id)

        try:
            self.writer.submit_then(
                job, lambda done: self._written(prediction_id, numbered, view, done)
            )
        except RuntimeError as exc:  # the writer has stopped (shutdown): kept for a retry
            self._failed(prediction_id, backlog, numbered, exc)

    def _written(
        self,
        prediction_id: str,
        numbered: list[tuple[int, NewEvent]],
        view: Prediction,
        done: Future[None],
    ) -> None:
        """Back on the loop after a commit (or its failure)."""
        backlog = self._backlog.get(prediction_id)
        if backlog is None:  # dropped meanwhile
            return
        backlog.writing = False
        error = done.exception()
        prediction = backlog.prediction
        if error is not None:
            self._failed(prediction_id, backlog, numbered, error)
            return
        backlog.failures = 0
        meter = backlog.meter
        if meter is not None and self.metering is not None:  # committed: shown from now on
            if meter.cost_nanos is not None:
                prediction.cost_nanos = view.cost_nanos = meter.cost_nanos
            self.metering.committed(meter)
        self.wake(prediction_id)
        events = [event for _, event in numbered]
        for listener in self._listeners:  # before the next write: what they store comes first
            try:
                listener(view, events)
            except Exception:  # a listener's bug must not stop the log
                log.exception("an event listener failed for %s", prediction_id)
        if backlog.numbered:  # what came meanwhile follows, in order
            self._write(prediction_id, backlog)
            return
        del self._backlog[prediction_id]
        backlog.release_waiters()
        if prediction.status in TERMINAL:
            self._retire(prediction)

    def _failed(
        self,
        prediction_id: str,
        backlog: _Backlog,
        numbered: list[tuple[int, NewEvent]],
        error: BaseException,
    ) -> None:
        """Keep the events for a retry, unless the prediction is gone (deleted with its
        version): nothing is lost while the database can still take them."""
        backlog.numbered[:0] = numbered
        backlog.failures += 1
        delay = RETRY_DELAYS[min(backlog.failures, len(RETRY_DELAYS)) - 1]
        now = time.monotonic()
        if now - self._last_warning > 10:  # one line, not a traceback per event
            self._last_warning = now
            log.warning("events of %s not written (%s); retrying in %g s", prediction_id,
                        str(error).splitlines()[0][:200], delay)  # fmt: skip
        backlog.writing = True  # held until the retry

        async def retry() -> None:
            await asyncio.sleep(delay)
            try:
                exists = await asyncio.to_thread(self.stored, prediction_id) is not None
            except Exception as exc:  # noqa: BLE001 - the database is still away: wait longer
                self._failed(prediction_id, backlog, [], exc)
                return
            if exists:
                self._write(prediction_id, backlog)
            else:
                self._drop(prediction_id, backlog)

        task = asyncio.get_running_loop().create_task(retry())
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    def _drop(self, prediction_id: str, backlog: _Backlog) -> None:
        self._backlog.pop(prediction_id, None)
        self._live.pop(prediction_id, None)
        backlog.release_waiters()
        self.wake(prediction_id)

    def retries(self, prediction_id: str) -> int:
        """Failed writes of the prediction's waiting events in a row (0 when none wait)."""
        backlog = self._backlog.get(prediction_id)
        return 0 if backlog is None else backlog.failures

    async def drain(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Commit everything appended so far (at shutdown), waiting at most `timeout`."""
        self.flush()
        pending = list(self._backlog)
        if not pending:
            return
        try:
            async with asyncio.timeout(timeout):
                for prediction_id in pending:
                    await self.settled(prediction_id)
        except TimeoutError:
            log.error("%d predictions' events were not committed at shutdown", len(self._backlog))
        for task in self._retries:
            task.cancel()

    def wake(self, prediction_id: str) -> None:
        self._wakeups.wake(prediction_id)

    def wake_all(self) -> None:
        """Every follower re-reads (wake-ups from other processes may have been missed)."""
        self._wakeups.wake_all()

    def forget(self, prediction_id: str) -> None:
        """Another replica owns it now: drop its unwritten events (they would collide)."""
        backlog = self._backlog.pop(prediction_id, None)
        self._live.pop(prediction_id, None)
        self._recent.pop(prediction_id, None)
        if backlog is not None:
            backlog.release_waiters()
        self.wake(prediction_id)

    def _load(self, prediction_id: str) -> Prediction:
        prediction = self.snapshot(prediction_id)
        if prediction is None:
            raise LookupError(f"no prediction {prediction_id}")
        return prediction

    def _retire(self, prediction: Prediction) -> None:
        self._live.pop(prediction.id, None)
        self._recent[prediction.id] = prediction
        while len(self._recent) > RECENT:
            self._recent.popitem(last=False)

    def known(self, prediction_id: str) -> Prediction | None:
        """The newest state when it runs (or just ran) here; None when only the database knows."""
        return self._live.get(prediction_id) or self._recent.get(prediction_id)

    def snapshot(self, prediction_id: str) -> Prediction | None:
        """The newest state: from memory when it runs (or just ran) here, else the database."""
        return self.known(prediction_id) or self.stored(prediction_id)

    async def latest(self, prediction_id: str) -> Prediction | None:
        """`snapshot`, reading the database (when it must) off the event loop."""
        known = self.known(prediction_id)
        if known is not None:
            return known
        return await asyncio.to_thread(self.stored, prediction_id)

    def stored(self, prediction_id: str) -> Prediction | None:
        """The prediction as the database holds it (blocking: call it off the loop)."""
        with self.db.session() as session:
            return get_prediction(session, prediction_id)

    async def wait_until(
        self, prediction_id: str, done: Callable[[Prediction], bool], timeout: float
    ) -> Prediction | None:
        """The prediction once `done(prediction)` holds, and is committed, or `timeout` seconds
        have passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            wakeup = self._wakeups.take(prediction_id)
            prediction = await self.latest(prediction_id)
            remaining = deadline - loop.time()
            reached = prediction is not None and done(prediction)
            # Nothing is announced before it is stored: if the commit does not come in time, the
            # answer is what the database holds.
            if reached and not await self.settled(prediction_id, remaining):
                prediction = await asyncio.to_thread(self.stored, prediction_id)
                self._wakeups.release(prediction_id, wakeup, prediction)
                return prediction
            if prediction is None or done(prediction) or remaining <= 0:
                self._wakeups.release(prediction_id, wakeup, prediction)
                return prediction
            await Wakeups.changed(wakeup, min(remaining, self.poll_interval))

    async def follow(
        self, prediction_id: str, after: int = -1, heartbeat: float = 15.0
    ) -> AsyncIterator[LoggedEvent | None]:
        """Every event after `after`, then new ones as they come, until `done`.

        Yields None when `heartbeat` seconds pass without an event (time for an SSE comment).
        """
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        while True:
            wakeup = self._wakeups.take(prediction_id)
            rows, status = await asyncio.to_thread(self._events, prediction_id, after)
            for row in rows:
                after = row.seq
                yield row
                if row.type == "done":
                    self._wakeups.release(prediction_id, wakeup, None)
                    return
            if rows:
                quiet_since = loop.time()
                continue
            if status is None or status in TERMINAL:  # gone, or ended without a done event
                self._wakeups.release(prediction_id, wakeup, None)
                return
            if loop.time() - quiet_since >= heartbeat:
                quiet_since = loop.time()
                yield None
            await Wakeups.changed(wakeup, min(self.poll_interval, heartbeat))

    def _events(self, prediction_id: str, after: int) -> tuple[list[LoggedEvent], str | None]:
        """Committed events after `after` (and, when there are none, the status).

        With none, the status is read and then the events again: SQLite's reads are not one
        snapshot, so a status read after an empty read could see an end whose last events
        (committed with it) that read missed.
        """
        with self.db.session() as session:
            events = self._rows(session, prediction_id, after)
            if events:
                return events, None
            prediction = get_prediction(session, prediction_id)
            status = None if prediction is None else prediction.status
            events = self._rows(session, prediction_id, after)
            return (events, None) if events else ([], status)

    @staticmethod
    def _rows(session: Session, prediction_id: str, after: int) -> list[LoggedEvent]:
        rows = events_after(session, prediction_id, after)
        return [LoggedEvent(r.seq, r.type, r.data, r.created_at) for r in rows]
