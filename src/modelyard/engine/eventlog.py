"""The event log's live side: append (persisted first), then wake everyone who follows it.

Predictions this process runs are kept in memory while they are live (`track`), so appending is
one UPDATE and one INSERT, and waiting reads no database. Followers of other predictions re-read
the database after every wake-up and at least once a second, so a follower in another process (an
API replica on the same database) sees the same events, only later.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from modelyard.store.database import Database
from modelyard.store.predictions import (
    TERMINAL,
    NewEvent,
    events_after,
    get_prediction,
    project,
    write_events,
)
from modelyard.store.tables import Prediction

POLL_INTERVAL = 1.0
RECENT = 1024  # finished predictions kept in memory for waiters that wake late
FLUSH_DELAY = 0.005  # seconds a non-urgent event may wait to share a commit

Listener = Callable[[Prediction, list[NewEvent]], None]
Pending = tuple[Prediction, list[tuple[int, NewEvent]]]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoggedEvent:
    seq: int
    type: str
    data: Any
    created_at: datetime


class EventLog:
    """Appends to the persisted log and fans out to waiters and listeners (webhooks)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._wakeups: dict[str, asyncio.Event] = {}
        self._listeners: list[Listener] = []
        self._live: dict[str, Prediction] = {}  # running here: the newest state, in memory
        self._recent: OrderedDict[str, Prediction] = OrderedDict()  # just finished
        self._pending: dict[str, Pending] = {}
        self._flush_timer: asyncio.TimerHandle | None = None

    def track(self, prediction: Prediction) -> None:
        """Keep a prediction this process will run in memory until it ends."""
        if prediction.status not in TERMINAL:
            self._live[prediction.id] = prediction

    def add_listener(self, listener: Listener) -> None:
        """Called after each commit with the prediction's state and the events written."""
        self._listeners.append(listener)

    def append(self, prediction_id: str, *events: NewEvent, urgent: bool = True) -> Prediction:
        """Project `events` onto the prediction now; persist them now when `urgent` (and always
        for the final event), else within `FLUSH_DELAY` together with whatever else came.

        Grouping matters for speed: a quick prediction's `processing` and `done` become one
        commit, and a model streaming tokens writes a few per commit, not one each.
        Followers are woken once the events are committed.
        """
        prediction = self._live.get(prediction_id) or self._load(prediction_id)
        numbered = project(prediction, list(events))
        if numbered:
            pending = self._pending.setdefault(prediction_id, (prediction, []))
            pending[1].extend(numbered)
        if urgent or prediction.status in TERMINAL:
            self.flush()
        elif self._pending and self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(FLUSH_DELAY, self.flush)
        return prediction

    def flush(self) -> None:
        """Commit every pending event (one transaction), then wake followers and tell listeners
        what was written: nothing is announced that is not persisted."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        for prediction_id, (prediction, numbered) in self._write(pending).items():
            if prediction.status in TERMINAL:
                self._retire(prediction)
            self.wake(prediction_id)
            for listener in self._listeners:
                listener(prediction, [event for _, event in numbered])

    def _write(self, pending: dict[str, Pending]) -> dict[str, Pending]:
        """What was committed. When the group fails, each prediction is written on its own, so
        one bad row (a prediction deleted with its version) cannot lose the others' events."""
        try:
            with self.db.engine.begin() as connection:
                for prediction, numbered in pending.values():
                    write_events(connection, prediction, numbered)
            return pending
        except SQLAlchemyError:
            log.warning(
                "a group commit of %d predictions failed; retrying one by one", len(pending)
            )
        written: dict[str, Pending] = {}
        for prediction_id, (prediction, numbered) in pending.items():
            try:
                with self.db.engine.begin() as connection:
                    write_events(connection, prediction, numbered)
                written[prediction_id] = (prediction, numbered)
            except SQLAlchemyError:
                if self._exists(prediction_id):  # kept for the next flush
                    log.exception("events of %s not written yet; will retry", prediction_id)
                    self._pending.setdefault(prediction_id, (prediction, []))[1][:0] = numbered
                else:  # deleted meanwhile: nothing left to write to
                    self._live.pop(prediction_id, None)
        return written

    def _exists(self, prediction_id: str) -> bool:
        with self.db.session() as session:
            return get_prediction(session, prediction_id) is not None

    def wake(self, prediction_id: str) -> None:
        wakeup = self._wakeups.pop(prediction_id, None)
        if wakeup is not None:
            wakeup.set()

    def _wakeup(self, prediction_id: str) -> asyncio.Event:
        """Taken before reading, so an append between the read and the wait is not missed."""
        return self._wakeups.setdefault(prediction_id, asyncio.Event())

    def _release(
        self, prediction_id: str, wakeup: asyncio.Event, prediction: Prediction | None
    ) -> None:
        """Drop the wake-up of a prediction nothing will append to any more (else one would be
        left behind per finished wait); another waiter on it re-reads within POLL_INTERVAL."""
        over = prediction is None or prediction.status in TERMINAL
        if over and self._wakeups.get(prediction_id) is wakeup:
            del self._wakeups[prediction_id]

    @staticmethod
    async def _changed(wakeup: asyncio.Event, timeout: float) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that arrives with
        # the wake-up, and a follower would then never stop.
        try:
            async with asyncio.timeout(timeout):
                await wakeup.wait()
        except TimeoutError:
            pass

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

    def snapshot(self, prediction_id: str) -> Prediction | None:
        """The newest state: from memory when it runs (or just ran) here, else the database."""
        known = self._live.get(prediction_id) or self._recent.get(prediction_id)
        if known is not None:
            return known
        with self.db.session() as session:
            return get_prediction(session, prediction_id)

    async def wait_until(
        self, prediction_id: str, done: Callable[[Prediction], bool], timeout: float
    ) -> Prediction | None:
        """The prediction once `done(prediction)` holds or `timeout` seconds have passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            wakeup = self._wakeup(prediction_id)
            prediction = self.snapshot(prediction_id)
            remaining = deadline - loop.time()
            if prediction is None or done(prediction) or remaining <= 0:
                self._release(prediction_id, wakeup, prediction)
                return prediction
            await self._changed(wakeup, min(remaining, POLL_INTERVAL))

    async def follow(
        self, prediction_id: str, after: int = -1, heartbeat: float = 15.0
    ) -> AsyncIterator[LoggedEvent | None]:
        """Every event after `after`, then new ones as they come, until `done`.

        Yields None when `heartbeat` seconds pass without an event (time for an SSE comment).
        """
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        while True:
            wakeup = self._wakeup(prediction_id)
            with self.db.session() as session:
                rows = events_after(session, prediction_id, after)
                status = None if rows else _status(session, prediction_id)
            for row in rows:
                after = row.seq
                yield LoggedEvent(row.seq, row.type, row.data, row.created_at)
                if row.type == "done":
                    self._release(prediction_id, wakeup, None)
                    return
            if rows:
                quiet_since = loop.time()
                continue
            if status is None or status in TERMINAL:  # gone, or ended without a done event
                self._release(prediction_id, wakeup, None)
                return
            if loop.time() - quiet_since >= heartbeat:
                quiet_since = loop.time()
                yield None
            await self._changed(wakeup, min(POLL_INTERVAL, heartbeat))


def _status(session: Any, prediction_id: str) -> str | None:
    prediction = get_prediction(session, prediction_id)
    return None if prediction is None else prediction.status
