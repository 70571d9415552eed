"""The one writer: a thread that owns the write connection and commits jobs in groups.

As in Datasette, every write that sits on a hot path is a job for this thread, so the event
loop never waits on a commit (or on SQLite's busy timeout) and concurrent writers never contend
for SQLite's lock. Jobs queued while a commit runs share the next transaction (group commit).
When a group fails, each job is retried in a transaction of its own, so one bad job cannot
take the others down; a job that fails on its own gets the exception through its future.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from .database import Database

T = TypeVar("T")
Job = Callable[[Connection], T]
log = logging.getLogger(__name__)

GROUP_MAX = 256  # jobs in one transaction at most
STOP_TIMEOUT = 30.0  # seconds `stop()` waits for the queue to drain


@dataclass
class _Queued(Generic[T]):
    job: Job[T]
    future: Future[T] = field(default_factory=Future)


_STOP = object()


class Writer:
    """Runs write jobs on one thread, in the order they were submitted."""

    def __init__(self, db: Database, name: str = "modelyard-writer") -> None:
        self.db = db
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False
        self._stopped = False
        self._lock = threading.Lock()

    def submit(self, job: Job[T]) -> Future[T]:
        """Queue `job` (called with a Connection inside a transaction); its future resolves
        once that transaction has committed, with what the job returned. Raises RuntimeError
        once the writer has stopped (nothing would run it)."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("the database writer has stopped")
            if not self._started:
                self._started = True
                self._thread.start()
            queued: _Queued[T] = _Queued(job)
            self._queue.put(queued)
        return queued.future

    def submit_then(self, job: Job[T], then: Callable[[Future[T]], None]) -> Future[T]:
        """`submit`, calling `then(future)` on the calling thread's event loop once the job's
        transaction has ended (committed or failed); not if that loop has closed meanwhile."""
        loop = asyncio.get_running_loop()

        def back(done: Future[T]) -> None:  # on the writer thread
            if not loop.is_closed():
                loop.call_soon_threadsafe(then, done)

        future = self.submit(job)
        future.add_done_callback(back)
        return future

    async def write(self, job: Job[T]) -> T:
        """`submit`, awaited from the event loop."""
        return await asyncio.wrap_future(self.submit(job))

    async def write_session(self, job: Callable[[Session], T]) -> T:
        """`write` for code written against an ORM Session (it joins the group's transaction)."""
        return await self.write(_in_session(job))

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Commit what is queued, then end the thread (bounded by `timeout`)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            if not self._started:
                return
            self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("the database writer did not finish within %g s", timeout)

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            group = [first]
            stop = False
            while len(group) < GROUP_MAX:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                group.append(more)
            self._commit(group)
            if stop:
                return

    def _commit(self, group: list[_Queued[Any]]) -> None:
        live = [q for q in group if q.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            with self.db.engine.begin() as connection:
                results = [q.job(connection) for q in live]
        except Exception:  # noqa: BLE001 - retried one by one below, where each gets its own answer
            if len(live) > 1:
                log.warning("a group commit of %d writes failed; retrying one by one", len(live))
            for queued in live:
                self._commit_one(queued)
            return
        for queued, result in zip(live, results, strict=True):
            queued.future.set_result(result)

    def _commit_one(self, queued: _Queued[Any]) -> None:
        try:
            with self.db.engine.begin() as connection:
                result = queued.job(connection)
        except Exception as exc:  # noqa: BLE001 - the submitter decides what a failure means
            queued.future.set_exception(exc)
        else:
            queued.future.set_result(result)


def _in_session(job: Callable[[Session], T]) -> Job[T]:
    def run(connection: Connection) -> T:
        with Session(bind=connection, expire_on_commit=False) as session:
            result = job(session)
            session.flush()
            return result

    return run
