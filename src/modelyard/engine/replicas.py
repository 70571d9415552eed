"""This server process among the API replicas that share one database: its lease, its claims,
and what it hears from the others.

On PostgreSQL several `modelyard serve` processes share the database (docs/replicas.md):
- At start the replica registers (a row in `replicas`) and claims the orphans: unfinished
  predictions whose owner is nobody or a replica whose lease expired. Claimed ones that never
  started are queued here; those that were running fail with `RESTART_ERROR` (the replica that
  ran them is gone, and its workers with it). It claims again every `lease_ttl / 2`, and at once
  when another replica says it left.
- It renews its lease every `lease_ttl / 3`. A renewal that finds the lease expired (a long
  stall, the database away) means others may have claimed what it owned: it joins again under
  a new id, takes back what is still its own and drops the rest without running it. While the
  lease is in doubt, nothing new starts here (`may_run`).
- A LISTEN thread hears the others: committed events (followers here re-read at once), cancels
  of predictions this replica runs, and replicas that left.
- A graceful stop deletes its row: what it did not run is claimable by the others at once.

On SQLite there is one server process (`modelyard serve` locks the data folder): `start`
recovers every unfinished prediction, as ever, and nothing else here runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection

from modelyard.store.listener import Listener
from modelyard.store.predictions import TERMINAL, done_event, unfinished
from modelyard.store.replicas import (
    CANCEL_CHANNEL,
    CHANNELS,
    EVENTS_CHANNEL,
    LEFT_CHANNEL,
    claim,
    claim_orphans,
    new_replica_id,
    notify,
    owner_alive,
    reclaim,
    register,
    renew,
    retire,
)
from modelyard.store.tables import Prediction

from .eventlog import POLL_INTERVAL
from .jobs import JobState

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)
T = TypeVar("T")

RESTART_ERROR = (
    "The server stopped while this prediction was running, so it did not finish. Run it again."
)
SAFETY_POLL = 5.0  # seconds between followers' re-reads while NOTIFY wakes them
LISTEN_READY = 5.0  # seconds `start` waits for the LISTEN connection
LEASE_WAIT = 0.1  # seconds between looks while the lease is in doubt
CANCEL_TRIES = 3  # claims of a dead owner's prediction lost to other replicas, at most


class Replica:
    """One engine's membership (a random id per engine, and per rejoin)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.db = engine.db
        self.shared = self.db.shared
        self.ttl = engine.settings.lease_ttl
        self.id = new_replica_id()
        # Monotonic time the lease surely lasts to (it was renewed no earlier than this minus
        # ttl). Unlimited until `start` registers: an engine never started owns no lease.
        self._lease_until = math.inf
        self._registered = False
        self._listener: Listener | None = None
        self._claim_now = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        # Lease work has its own thread: renewals must not queue behind the API's to_thread
        # calls (a busy server would lose its lease), nor behind the writer's group commits.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="modelyard-lease")

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Join, listen and take the orphans (SQLite: recover everything unfinished)."""
        self._loop = asyncio.get_running_loop()
        if not self.shared:
            self._recover(await asyncio.to_thread(self._unfinished))
            return
        began = time.monotonic()
        await self._db(self._register, self.id)
        self._registered, self._lease_until = True, began + self.ttl
        self.engine.log.on_write = _notify_events
        self._listener = Listener(self.db.url, CHANNELS, self._heard_there, self._connected_there)
        self._listener.start()
        if not await asyncio.to_thread(self._listener.wait_ready, LISTEN_READY):
            log.warning("not listening to the other replicas yet; followers poll meanwhile")
        self._spawn(self._renew_forever(), "lease renewal")
        self._spawn(self._claim_forever(), "orphan claims")
        await self._claim_quietly()

    async def _claim_quietly(self) -> None:
        """`claim`, logging a failure (the database away, a transaction PostgreSQL aborted):
        the next round, at most `lease_ttl / 2` later, tries again."""
        try:
            await self.claim()
        except Exception:
            log.exception("claiming the predictions of replicas that are gone failed")

    def pause(self) -> None:
        """The engine is stopping: claim nothing more (it would not run), hear nothing more."""
        for task in list(self._tasks):
            task.cancel()

    async def stop(self) -> None:
        """Leave, once the engine runs nothing any more (its pools closed, its events
        committed), so the others claim at once what this replica did not run."""
        self.pause()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
        try:
            if self._registered:
                await self._db(self._retire)
                self._registered = False
        finally:
            self._executor.shutdown(wait=False)

    # -- leases ----------------------------------------------------------------------------

    async def may_run(self, prediction_id: str) -> bool:
        """Whether the engine may start running the prediction now: at once while the lease
        holds; else once a renewal tells (a rejoin drops what others took meanwhile)."""
        while time.monotonic() >= self._lease_until:
            await asyncio.sleep(LEASE_WAIT)
        return prediction_id in self.engine.jobs

    async def renew(self) -> None:
        """Push the lease forward; join again if it had expired."""
        began = time.monotonic()
        try:
            alive = await self._db(self._renew)
        except Exception as exc:  # noqa: BLE001 - the database away: the next try may make it
            log.warning("renewing the lease of replica %s failed: %s", self.id,
                        str(exc).splitlines()[0][:200])  # fmt: skip
            return
        if alive:
            self._lease_until = began + self.ttl
        else:
            await self._rejoin()

    async def _rejoin(self) -> None:
        old, new = self.id, new_replica_id()
        log.warning("the lease of replica %s expired; joining again as %s", old, new)
        began = time.monotonic()
        await self._db(self._register, new)
        self.id = new  # creates from now on are owned under the new, live id
        self._lease_until = began + self.ttl
        mine = set(self.engine.jobs)
        kept = await self._db(self._reclaim, mine, old, new)
        for prediction_id in mine - kept:
            self._drop(prediction_id)

    def _drop(self, prediction_id: str) -> None:
        """Another replica claimed it while our lease had lapsed: it is theirs to run."""
        engine = self.engine
        job = engine.jobs.pop(prediction_id, None)
        if job is None:
            return
        log.warning("prediction %s went to another replica while our lease had lapsed",
                    prediction_id)  # fmt: skip
        if job.deadline is not None:
            job.deadline.cancel()
        pool = engine.pools.get(job.key)
        if job.state is JobState.QUEUED and pool is not None:
            pool.remove(job)
        elif job.state is JobState.RUNNING and job.instance is not None:
            self._spawn(job.instance.cancel(prediction_id), f"drop {prediction_id}")
        engine.log.forget(prediction_id)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            await self.renew()

    # -- claims ----------------------------------------------------------------------------

    async def claim(self) -> list[Prediction]:
        """Take the orphans now; the predictions taken."""
        claimed = await self._db(self._claim_orphans)
        if claimed:
            log.warning("replica %s took %d unfinished predictions of replicas that are gone",
                        self.id, len(claimed))  # fmt: skip
        self._recover(claimed)
        return claimed

    def _recover(self, predictions: Iterable[Prediction]) -> None:
        """Queue what never started; fail what was running where it can no longer finish."""
        engine = self.engine
        for prediction in predictions:
            if prediction.id in engine.jobs:
                continue
            if prediction.status == "processing":
                engine.log.track(prediction)  # appended from memory, not read again
                engine.log.append(prediction.id, done_event("failed", error=RESTART_ERROR))
            else:
                engine.submit(prediction)

    async def _claim_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.ttl / 2):
                    await self._claim_now.wait()
            self._claim_now.clear()
            await self._claim_quietly()

    async def cancel_elsewhere(self, prediction: Prediction) -> bool:
        """A cancel of an unfinished prediction that has no Job here. True: its owner, another
        live replica, was asked to cancel it (or it ended meanwhile): wait for its end. False:
        this replica holds it now (its owner is gone, or on SQLite) and ends it itself."""
        if not self.shared:
            return False
        for _ in range(CANCEL_TRIES):
            owner = prediction.owner
            if owner != self.id and await self._db(self._alive, owner):
                ask = functools.partial(notify, channel=CANCEL_CHANNEL, payload=prediction.id)
                await self.engine.writer.write(ask)
                return True
            claimed = await self._db(self._claim, prediction.id, owner)
            if claimed is not None:
                self.engine.log.track(claimed)
                return False
            fresh = await self._db(self.engine.log.stored, prediction.id)
            if fresh is None or fresh.status in TERMINAL:
                return True
            prediction = fresh  # claimed by another replica meanwhile: ask that one
        return True

    # -- what the others say ---------------------------------------------------------------

    def _heard_there(self, channel: str, payload: str) -> None:
        """On the listener's thread: to the event loop."""
        with contextlib.suppress(RuntimeError):  # the loop closed: nothing to tell
            self._loop.call_soon_threadsafe(self._heard, channel, payload)

    def _heard(self, channel: str, payload: str) -> None:
        engine = self.engine
        if channel == EVENTS_CHANNEL:
            if engine.log.known(payload) is None:  # one that runs here woke its followers
                engine.log.wake(payload)
        elif channel == CANCEL_CHANNEL:
            if payload in engine.jobs:
                self._spawn(engine.cancel(payload), f"cancel {payload}")
        elif channel == LEFT_CHANNEL and payload != self.id:
            self._claim_now.set()

    def _connected_there(self, up: bool) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._connected, up)

    def _connected(self, up: bool) -> None:
        """While LISTEN works, followers poll rarely; after a reconnect they re-read at once
        (what was committed in between was announced to nobody here)."""
        self.engine.log.poll_interval = SAFETY_POLL if up else POLL_INTERVAL
        if up:
            self.engine.log.wake_all()
            self._claim_now.set()

    # -- helpers ---------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _db(self, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)

    def _register(self, replica_id: str) -> None:
        with self.db.engine.begin() as connection:
            register(connection, replica_id, self.ttl)

    def _renew(self) -> bool:
        with self.db.engine.begin() as connection:
            return renew(connection, self.id, self.ttl)

    def _retire(self) -> None:
        with self.db.engine.begin() as connection:
            retire(connection, self.id)

    def _reclaim(self, ids: set[str], old: str, new: str) -> set[str]:
        with self.db.session() as session:
            return reclaim(session, ids, old, new)

    def _claim_orphans(self) -> list[Prediction]:
        with self.db.session() as session:
            return claim_orphans(session, self.id)

    def _claim(self, prediction_id: str, owner: str | None) -> Prediction | None:
        with self.db.session() as session:
            return claim(session, prediction_id, owner, self.id)

    def _alive(self, owner: str | None) -> bool:
        with self.db.session() as session:
            return owner_alive(session, owner)

    def _unfinished(self) -> list[Prediction]:
        with self.db.session() as session:
            return unfinished(session)


def _notify_events(connection: Connection, prediction_id: str) -> None:
    """EventLog.on_write: replicas following the prediction hear of its commit."""
    notify(connection, EVENTS_CHANNEL, prediction_id)
