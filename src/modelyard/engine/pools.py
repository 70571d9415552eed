"""A pool of instances for one version (or deployment): a FIFO queue of jobs, instances started
on demand up to a maximum, and instances stopped when idle (scale to zero).

A prediction waits in the queue while every slot is busy: never a 409. How many predictions an
instance runs at once is what its worker reported when it started (`Instance.start`).

An instance whose machine is lost (`Instance.lost`, on the Ray backend) takes no more jobs and
leaves the pool once nothing runs on it; jobs that are waiting boot a replacement. A job its
instance could not start because the instance was already gone (`InstanceLost`) goes back to
the front of the queue.

A boot that fails (setup raised, the environment did not build) fails the job that asked for it
and, when no other instance of the pool could run them, every job queued behind it, with the
same error: setup is not run again for each of them. New boots then back off (`Backoff`: 5 s,
doubling up to 5 minutes, reset by a boot that succeeds); a job that arrives meanwhile with no
instance to run it fails at once with the error, saying when the next try is.

A `PoolWatcher` (engine/instances.py) hears every change of a member's state (booting, idle,
busy, stopping) and when it is gone; it may `retire` a member (an unhealthy instance): it takes
no more jobs, and leaves once nothing runs on it, as a lost one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from modelyard.runtime.waiting import Backoff
from modelyard.store.tables import utcnow

from .backend import BootFailed, Instance, InstanceLost
from .jobs import Job, JobState

log = logging.getLogger(__name__)

MakeInstance = Callable[[], Awaitable[Instance]]
RunJob = Callable[[Instance, Job], Awaitable[None]]
BootLog = Callable[[str, str], None]  # (prediction id, text)
BootFailedCallback = Callable[[Job, str], None]  # (job, error)


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


class _NoWatcher:
    def changed(self, pool: Pool, member: Member) -> None:
        pass

    def gone(self, member: Member) -> None:
        pass


@dataclass(frozen=True)
class PoolPolicy:
    max_instances: int = 1
    min_instances: int = 0
    idle_timeout: float = 300.0


class Pool:
    """Runs queued jobs of one version on up to `max_instances` instances."""

    def __init__(
        self,
        name: str,
        policy: PoolPolicy,
        make_instance: MakeInstance,
        run: RunJob,
        boot_log: BootLog,
        boot_failed: BootFailedCallback,
        watcher: PoolWatcher | None = None,
    ) -> None:
        self.name = name
        self.watcher: PoolWatcher = watcher or _NoWatcher()
        self.policy = policy
        self._make_instance = make_instance
        self._run = run
        self._boot_log = boot_log
        self._boot_failed = boot_failed
        self.queue: deque[Job] = deque()
        self.members: list[Member] = []
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.backoff = Backoff()  # after a failed boot, when the next may start

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._dispatch(), name=f"pool {self.name}")

    def set_policy(self, policy: PoolPolicy) -> None:
        """New limits, applied at once (more instances may boot; idle ones may stop)."""
        self.policy = policy
        self._kick.set()

    def retire(self, member: Member, why: str) -> None:
        """`member` takes no more jobs; it stops once nothing runs on it, and jobs that wait
        boot a replacement."""
        if member.retired is None and member in self.members:
            member.retired = why
            log.warning("%s: replacing an instance: %s", self.name, why)
            self._kick.set()

    def put(self, job: Job) -> None:
        job.state = JobState.QUEUED
        self.queue.append(job)
        self._kick.set()

    def remove(self, job: Job) -> bool:
        """Take a queued job out; False if it already left the queue."""
        try:
            self.queue.remove(job)
        except ValueError:
            return False
        return True

    @property
    def idle(self) -> bool:
        return not self.queue and all(m.busy == 0 for m in self.members)

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            self._kick.clear()
            try:
                await self._drop_lost()
                self._assign()
                await self._stop_idle(loop.time())
            except Exception:  # a bug of ours must not stop the pool: log it, go on
                log.exception("the dispatcher of %s failed a round", self.name)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._until_idle_stop(loop.time())):
                    await self._kick.wait()

    def _assign(self) -> None:
        """Queued jobs to free slots, booting instances up to the maximum, first come first."""
        while self.queue:
            member = next((m for m in self.members if m.free), None)
            if member is not None:
                job = self.queue.popleft()
                _running_on(job, member)  # now, not when its task starts: cancel reads it
                self._launch(member, job, self._run_on)
            elif len(self.members) < self.policy.max_instances and not self.backoff.remaining():
                self._boot(self.queue.popleft())
            elif not self.members and self.backoff.error is not None:  # nothing could run it
                self._fail(self.queue.popleft(), self.backoff.error)
            else:
                break

    async def _drop_lost(self) -> None:
        """Lost instances with nothing running leave (so that `_assign` may replace them)."""
        for member in [m for m in self.members if m.ready and m.busy == 0 and m.lost]:
            await self._leave(member)

    def _until_idle_stop(self, now: float) -> float | None:
        """Seconds until an idle instance is due to stop; None when none is (then only a kick,
        a job queued, an instance ready or a slot freed, wakes the dispatcher)."""
        if len(self.members) <= self.policy.min_instances:
            return None
        idle = [m.idle_since for m in self.members if m.ready and m.busy == 0]
        if not idle:
            return None
        return max(0.05, min(idle) + self.policy.idle_timeout - now)

    def _launch(
        self, member: Member, job: Job, work: Callable[[Member, Job], Coroutine[Any, Any, None]]
    ) -> None:
        member.busy += 1
        self.watcher.changed(self, member)
        task = asyncio.create_task(work(member, job), name=f"run {job.prediction_id}")
        member.tasks.add(task)
        task.add_done_callback(member.tasks.discard)

    async def _run_on(self, member: Member, job: Job) -> None:
        assert member.instance is not None
        member.log_to = job.prediction_id
        try:
            await self._run(member.instance, job)
        except InstanceLost:  # it never started there: first in line again, for another instance
            job.state, job.instance = JobState.QUEUED, None
            self.queue.appendleft(job)
        except Exception:  # a bug of ours must not stop the pool
            log.exception("prediction %s failed inside the engine", job.prediction_id)
        finally:
            member.busy -= 1
            member.idle_since = asyncio.get_running_loop().time()
            if member in self.members:
                self.watcher.changed(self, member)
            self._kick.set()  # a lost member leaves at the dispatcher's next round

    def _boot(self, job: Job) -> None:
        """A new instance; the job that asked for it sees its build and setup logs."""
        member = Member(instance=None, log_to=job.prediction_id)
        job.state = JobState.BOOTING
        self.members.append(member)
        self._launch(member, job, self._boot_then_run)

    async def _boot_then_run(self, member: Member, job: Job) -> None:
        def progress(text: str) -> None:
            self._boot_log(member.log_to, text if text.endswith("\n") else text + "\n")

        try:
            member.instance = await self._make_instance()
            self.watcher.changed(self, member)  # its hardware is known now
            member.slots = await member.instance.start(progress)
            error = None
        except BootFailed as exc:
            error = str(exc)
        except Exception as exc:
            log.exception("booting an instance of %s failed", self.name)
            error = str(exc) or type(exc).__name__
        if error is not None:
            self.members.remove(member)
            self.watcher.gone(member)
            member.busy -= 1
            self.backoff.failed(f"setup failed: {error}")
            self._boot_failed(job, f"setup failed: {error}")  # first: stopping may fail too
            if not self.members:  # no instance could run what waits: it fails the same way
                while self.queue:
                    self._fail(self.queue.popleft(), f"setup failed: {error}")
            self._kick.set()
            await _stop(member)
            return
        self.backoff.succeeded()
        member.ready = True
        self.watcher.changed(self, member)
        _running_on(job, member)
        self._kick.set()  # its other slots may take queued jobs now
        await self._run_on(member, job)

    def _fail(self, job: Job, error: str) -> None:
        """End a queued job with the pool's last boot error, without booting for it."""
        wait = self.backoff.remaining()
        when = f"in {wait:.0f} s" if wait >= 1 else "with the next prediction"
        note = (
            "Not started: the last setup of this model failed, so this prediction fails with "
            f"its error. Setup is tried again {when}.\n"
        )
        self._boot_log(job.prediction_id, note)
        self._boot_failed(job, error)

    async def _stop_idle(self, now: float) -> None:
        keep = self.policy.min_instances
        for member in list(self.members):
            if len(self.members) <= keep:
                return
            idle = member.ready and member.busy == 0 and not self.queue
            if idle and now - member.idle_since >= self.policy.idle_timeout:
                await self._leave(member)

    async def pause(self) -> None:
        """Start nothing more: queued jobs stay queued (the next start of the server runs them),
        boots in progress stop (their jobs never ran), running jobs go on."""
        await self._halt(booting_only=True)

    async def close(self) -> None:
        await self._halt(booting_only=False)
        for member in list(self.members):
            await self._leave(member)

    async def _leave(self, member: Member) -> None:
        """Out of the pool, then stopped (seen as `stopping` meanwhile)."""
        self.members.remove(member)
        member.stopping = True
        self.watcher.changed(self, member)
        try:
            await _stop(member)
        finally:
            self.watcher.gone(member)

    async def _halt(self, *, booting_only: bool) -> None:
        """Stop the scheduling task, then the members' tasks (only their boots, or all)."""
        self._closed = True
        self._kick.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        tasks = [t for m in self.members if not (booting_only and m.ready) for t in m.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _running_on(job: Job, member: Member) -> None:
    job.instance, job.state = member.instance, JobState.RUNNING


async def _stop(member: Member) -> None:
    """Stop an instance; one that fails to stop is logged, not raised (the pool goes on)."""
    if member.instance is None:
        return
    try:
        await member.instance.stop()
    except Exception:
        log.exception("stopping an instance failed")
