"""A pool's members and its limits: what engine/pools.py schedules and engine/instances.py
watches (apart, so that the pool's scheduling stays one readable file)."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from modelyard.store.tables import utcnow

from .backend import Instance

if TYPE_CHECKING:
    from .pools import Pool


@dataclass(eq=False)
class Member:
    """One instance of the pool, booting or running, and what it is doing."""

    instance: Instance | None  # None while the backend makes it
    slots: int = 1
    ready: bool = False
    busy: int = 0
    idle_since: float = 0.0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # Who sees setup logs: the prediction that booted it, then, when a crashed worker is
    # replaced on the next prediction's way in, that prediction.
    log_to: str = ""
    id: str = field(default_factory=lambda: "i" + secrets.token_hex(12))
    started_at: datetime = field(default_factory=utcnow)
    stopping: bool = False
    retired: str | None = None  # why it takes no more jobs (its healthcheck failed)

    @property
    def lost(self) -> bool:
        lost = self.instance is not None and self.instance.lost
        return lost or self.retired is not None

    @property
    def state(self) -> str:
        """booting, idle, busy or stopping (what its owner sees)."""
        if self.stopping:
            return "stopping"
        if not self.ready:
            return "booting"
        return "busy" if self.busy else "idle"

    @property
    def free(self) -> bool:
        return self.ready and self.busy < self.slots and not self.lost


class PoolWatcher(Protocol):
    """Hears the members' changes (engine/instances.py)."""

    def changed(self, pool: Pool, member: Member) -> None: ...

    def gone(self, member: Member) -> None: ...


class NoWatcher:
    """A pool nobody watches."""

    def changed(self, pool: Pool, member: Member) -> None:
        pass

    def gone(self, member: Member) -> None:
        pass


@dataclass(frozen=True)
class PoolPolicy:
    """How many instances a pool may run and keep, and how long an idle one lives (seconds)."""

    max_instances: int = 1
    min_instances: int = 0
    idle_timeout: float = 300.0
