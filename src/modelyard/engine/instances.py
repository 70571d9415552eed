"""What the engine's instances are doing and how healthy they are, for their owners to see.

Every pool tells the board (`InstanceBoard`, a `PoolWatcher`) when a member changes: booting,
idle, busy, stopping, gone. The board keeps a snapshot of each and writes it to the `instances`
table (store/instances.py), grouped: at most one write every `FLUSH_EVERY` seconds, so that busy
and idle flips of a busy instance cost one small transaction per interval, not two per
prediction. Any replica reads the table to answer for any model.

Health. While an instance lives and is ready, the board runs its healthcheck (`Instance.health`:
the user's `healthcheck()` under Cog's 5 s timeout) at once and then every `interval` seconds,
one check at a time per instance (never overlapping, never while it boots or stops), and only
when it has a free slot, as Cog runs it only while READY. The latest result (Cog's status:
READY, BUSY, UNHEALTHY...; its error; when) is in the snapshot.

An instance whose healthcheck fails `replace_after` times in a row (3 by default; about 90 s at
the default interval) is replaced, as Replicate replaces an unhealthy instance: it takes no new
predictions, those running on it finish, then it stops, and predictions that wait boot a fresh
one. One failure is only shown: a healthcheck that fails once (a slow GPU, a blip) must not cost
a cold boot. `replace_after` 0 never replaces.

Knobs: `Settings.healthcheck_interval` (seconds, 0 turns the checks off) and
`Settings.healthcheck_replace_after` (`serve --healthcheck-interval/--healthcheck-replace-after`,
or `MODELYARD_HEALTHCHECK_INTERVAL`/`MODELYARD_HEALTHCHECK_REPLACE_AFTER`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from modelyard.runtime.runner import HEALTHCHECK_TIMEOUT, Health, RunnerState
from modelyard.settings import Settings
from modelyard.store.instances import (
    InstanceView,
    clear_replica,
    clear_stale,
    instances_of,
    save_snapshots,
)
from modelyard.store.space import out_of_space
from modelyard.store.tables import utcnow
from modelyard.store.writer import Writer

from .backend import Instance
from .jobs import PoolKey
from .pools import Member, Pool
from .views import timestamp

log = logging.getLogger(__name__)

# How long the engine waits for an answer: the worker's own 5 s, plus the way there and back
# (a Ray actor on another machine).
HEALTH_WAIT = HEALTHCHECK_TIMEOUT + 5.0
FLUSH_EVERY = 0.5  # seconds between writes of the snapshots that changed


class MemberListener(Protocol):
    """Hears what the pools tell the board about their members."""

    def member_changed(self, key: PoolKey, member: Member) -> None: ...

    def member_gone(self, key: PoolKey, member: Member) -> None: ...


@dataclass
class _Watched:
    """One member and what the board knows of it."""

    member: Member
    key: PoolKey
    pool: Pool
    health: Health | None = None
    checked_at: datetime | None = None
    failures: int = 0
    checker: asyncio.Task[None] | None = None


class InstanceBoard:
    """The engine's instances: their snapshots, their healthchecks (see the module doc)."""

    def __init__(self, settings: Settings, writer: Writer, replica: Callable[[], str]) -> None:
        self.writer = writer
        # Told of every member's changes, even while closing (a stopping instance ends an idle
        # period): the metering (engine/metering.py) and the metrics (engine/metrics.py).
        self.listeners: list[MemberListener] = []
        self._keys: dict[str, PoolKey] = {}  # member id -> its pool's key, for `gone`
        self.replica = replica  # this engine's replica id (it changes when it joins again)
        self.interval = settings.healthcheck_interval
        self.replace_after = settings.healthcheck_replace_after
        self.watched: dict[str, _Watched] = {}  # member id -> it
        self._dirty: set[str] = set()
        self._removed: set[str] = set()
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    def watcher(self, key: PoolKey) -> _PoolWatch:
        """The watcher of the pool of `key`."""
        return _PoolWatch(self, key)

    async def start(self) -> None:
        """Rows an earlier run left (store/instances.py says which) go; then writes begin."""
        await self.writer.write(clear_stale)
        self._flusher = asyncio.create_task(self._flush_forever(), name="instance snapshots")

    async def close(self) -> None:
        """Stop checking; the rows of this replica go (its instances stopped with it)."""
        self._closed = True
        for watched in self.watched.values():
            if watched.checker is not None:
                watched.checker.cancel()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        replica = self.replica()
        self.watched.clear()

        def clear(connection: Connection) -> None:
            clear_replica(connection, replica)

        await self.writer.write(clear)

    # -- what the pools say ----------------------------------------------------------------

    def changed(self, key: PoolKey, pool: Pool, member: Member) -> None:
        self._keys[member.id] = key
        self._tell("member_changed", key, member)
        if self._closed:  # the engine is stopping: nothing is checked or written any more
            return
        watched = self.watched.get(member.id)
        if watched is None:
            watched = self.watched[member.id] = _Watched(member, key, pool)
        if member.ready and watched.checker is None and self.interval > 0:
            watched.checker = asyncio.create_task(
                self._check_forever(watched), name=f"healthcheck {member.id}"
            )
        self._mark(member.id)

    def gone(self, member: Member) -> None:
        key = self._keys.pop(member.id, None)
        if key is not None:
            self._tell("member_gone", key, member)
        watched = self.watched.pop(member.id, None)
        if watched is not None and watched.checker is not None:
            watched.checker.cancel()
        self._dirty.discard(member.id)
        self._removed.add(member.id)
        self._wake.set()

    def _tell(self, what: str, key: PoolKey, member: Member) -> None:
        for listener in self.listeners:
            try:
                getattr(listener, what)(key, member)
            except Exception:  # a bug in a listener must not stop the pool
                log.exception("%s of instance %s failed in %r", what, member.id, listener)

    def _mark(self, member_id: str) -> None:
        self._dirty.add(member_id)
        self._wake.set()

    # -- health ----------------------------------------------------------------------------

    async def _check_forever(self, watched: _Watched) -> None:
        member = watched.member
        while True:
            instance = member.instance
            # Cog checks only while READY: a busy instance keeps its last result.
            if instance is not None and not member.stopping and member.busy < member.slots:
                try:
                    await self.check(watched, instance)
                except Exception:  # a bug of ours must not end the checks: log it, go on
                    log.exception("checking the health of instance %s failed", member.id)
            await asyncio.sleep(self.interval)

    async def check(self, watched: _Watched, instance: Instance) -> Health:
        """One healthcheck, recorded; the instance is replaced after `replace_after` failures
        in a row."""
        try:
            async with asyncio.timeout(HEALTH_WAIT):
                health = await instance.health()
        except TimeoutError:
            health = Health(RunnerState.UNHEALTHY, f"no answer within {HEALTH_WAIT:g} seconds")
        except Exception as exc:  # noqa: BLE001 - the instance could not be asked: say why
            health = Health(RunnerState.UNHEALTHY, f"the healthcheck failed: {exc}")
        if watched.member.id not in self.watched:  # it left while we asked
            return health
        watched.health, watched.checked_at = health, utcnow()
        healthy = health.status in (RunnerState.READY, RunnerState.BUSY)
        watched.failures = 0 if healthy else watched.failures + 1
        if self.replace_after and watched.failures >= self.replace_after:
            why = (
                f"{watched.failures} healthchecks in a row failed: {health.error or health.status}"
            )
            watched.pool.retire(watched.member, why)
        self._mark(watched.member.id)
        return health

    # -- the table -------------------------------------------------------------------------

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # shown state is best effort: the next change writes again
                if out_of_space(exc):  # one line, as every write that finds the disk full
                    log.warning("writing the instances' snapshots failed: the disk is full")
                else:
                    log.exception("writing the instances' snapshots failed")
            await asyncio.sleep(FLUSH_EVERY)

    async def flush(self) -> None:
        """Write what changed since the last flush."""
        dirty, self._dirty = self._dirty, set()
        removed, self._removed = self._removed, set()
        rows = [self._row(self.watched[i]) for i in dirty if i in self.watched]
        if not rows and not removed:
            return

        def save(connection: Connection) -> None:
            save_snapshots(connection, rows, removed)

        await self.writer.write(save)

    def _row(self, watched: _Watched) -> dict[str, Any]:
        member, key, health = watched.member, watched.key, watched.health
        instance = member.instance
        return {
            "id": member.id,
            "replica": self.replica(),
            "version_pk": key.version_pk,
            "mode": key.mode,
            "deployment_id": key.deployment_id,
            "hardware": None if instance is None else instance.spec.hardware.sku,
            "state": member.state,
            "started_at": member.started_at,
            "updated_at": utcnow(),
            "health_status": None if health is None else str(health.status),
            "health_error": None if health is None else health.error,
            "checked_at": watched.checked_at,
        }


class _PoolWatch:
    """One pool's `PoolWatcher`: the board, told which pool."""

    def __init__(self, board: InstanceBoard, key: PoolKey) -> None:
        self.board = board
        self.key = key

    def changed(self, pool: Pool, member: Member) -> None:
        self.board.changed(self.key, pool, member)

    def gone(self, member: Member) -> None:
        self.board.gone(member)


def model_instances(session: Session, model_id: int, shared: bool) -> list[dict[str, Any]]:
    """The instances of a model's own pools as its owner sees them (`instance_json`); `shared`:
    the database is shared by replicas (only those with a live lease count)."""
    now = utcnow()
    return [
        instance_json(v, now) for v in instances_of(session, model_id=model_id, live_only=shared)
    ]


def deployment_instances(
    session: Session, deployment_id: int, shared: bool
) -> list[dict[str, Any]]:
    """The instances of a deployment's pools (`instance_json`)."""
    now = utcnow()
    views = instances_of(session, deployment_id=deployment_id, live_only=shared)
    return [instance_json(v, now) for v in views]


def instance_json(view: InstanceView, now: datetime) -> dict[str, Any]:
    """One instance in the API's answers (fields the official clients ignore)."""
    health = None
    if view.health_status is not None:
        health = {
            "status": view.health_status,
            "error": view.health_error,
            "checked_at": timestamp(view.checked_at),
        }
    return {
        "id": view.id,
        "version": view.version_id,
        "mode": view.mode,
        "state": view.state,
        "hardware": view.hardware,
        "started_at": timestamp(view.started_at),
        "uptime_seconds": round(max(0.0, (now - view.started_at).total_seconds()), 1),
        "health": health,
    }
