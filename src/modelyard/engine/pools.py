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

Instance control (docs/platform.md, "Instance control"; engine/policies.py sets the knobs):
- `min_instances` instances are booted ahead of demand and kept while `keep_warm` is true (on
  several replicas only one replica keeps a deployment's). A warm boot that fails backs off as
  any boot does (`Backoff`), so a model whose setup fails is never booted in a tight loop.
- Lowering `max_instances` stops the surplus: idle members at once, busy ones take no more jobs
  (retired) and stop once what runs on them ends. A busy instance is never killed.
- `renew` (a new hardware for the same version) retires every member: what runs finishes on the
  old machine, new boots read the new spec.
- `drain` (a new release runs another version): the pool keeps nothing warm, runs what is queued
  and running on it to the end (those predictions were made for its version), then closes and
  calls `on_drained`: nothing is lost and nothing runs twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from modelyard.runtime.waiting import Backoff

from .backend import BootFailed, Instance, InstanceLost
from .bootbeat import BootHeartbeat
from .jobs import Job, JobState
from .members import Member, NoWatcher, PoolPolicy, PoolWatcher

__all__ = ["Member", "Pool", "PoolPolicy", "PoolWatcher"]

log = logging.getLogger(__name__)

MakeInstance = Callable[[], Awaitable[Instance]]
RunJob = Callable[[Instance, Job], Awaitable[None]]
BootLog = Callable[[str, str], None]  # (prediction id, text)
BootFailedCallback = Callable[[Job, str], None]  # (job, error)


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
        self.watcher: PoolWatcher = watcher or NoWatcher()
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
        self.keep_warm = True  # boot and keep `min_instances` (False: another replica keeps them)
        self.draining = False  # a release replaced its version: finish what is here, then close
        self.on_drained: Callable[[Pool], None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._dispatch(), name=f"pool {self.name}")

    def set_policy(self, policy: PoolPolicy) -> None:
        """New limits, applied at once (more instances may boot; idle ones may stop)."""
        self.policy = policy
        self._kick.set()

    def drain(self) -> None:
        """Keep nothing warm; close once nothing is queued, booting or running here."""
        self.draining = True
        self._kick.set()

    def renew(self, why: str) -> None:
        """Every member takes no more jobs and stops once idle; new boots read the spec again
        (the deployment's hardware changed)."""
        for member in self.members:
            if member.retired is None:
                member.retired = why
        self.backoff.reset()  # the new hardware may be what the failed boots lacked
        self._kick.set()

    @property
    def floor(self) -> int:
        """How many instances are kept even when idle."""
        if self.draining or not self.keep_warm:
            return 0
        return self.policy.min_instances

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
                await self._stop_surplus()
                self._assign()
                self._warm()
                await self._stop_idle(loop.time())
                if self.draining and self._drained():
                    break
            except Exception:  # a bug of ours must not stop the pool: log it, go on
                log.exception("the dispatcher of %s failed a round", self.name)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._next_wake(loop.time())):
                    await self._kick.wait()
        if self.draining and not self._closed:
            self._closed = True
            log.info("%s: drained after a new release; closing", self.name)
            if self.on_drained is not None:
                self.on_drained(self)  # it closes the pool (its members leave)

    def _drained(self) -> bool:
        return not self.queue and all(m.ready and m.busy == 0 for m in self.members)

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

    def _next_wake(self, now: float) -> float | None:
        """Seconds until an idle instance is due to stop, or a warm boot may be tried again
        after a failed one; None when neither (then only a kick, a job queued, an instance
        ready or a slot freed, wakes the dispatcher)."""
        waits = []
        if self._warm_wanted() > 0:
            waits.append(max(0.05, self.backoff.remaining()))
        if len(self.members) > self.floor:
            idle = [m.idle_since for m in self.members if m.ready and m.busy == 0]
            if idle:
                waits.append(max(0.05, min(idle) + self.policy.idle_timeout - now))
        return min(waits) if waits else None

    def _warm_wanted(self) -> int:
        """Instances to boot ahead of demand: up to `floor` that take jobs, within the max."""
        live = sum(1 for m in self.members if not m.lost)
        room = self.policy.max_instances - len(self.members)
        return max(0, min(self.floor - live, room))

    def _warm(self) -> None:
        """Boot instances ahead of demand (`min_instances`), unless boots are backing off."""
        if self.backoff.remaining():
            return
        for _ in range(self._warm_wanted()):
            member = Member(instance=None)
            self.members.append(member)
            self.watcher.changed(self, member)
            task = asyncio.create_task(self._boot_warm(member), name=f"warm {self.name}")
            member.tasks.add(task)
            task.add_done_callback(member.tasks.discard)

    async def _stop_surplus(self) -> None:
        """Above `max_instances` (it was lowered): idle members stop now, busy ones take no more
        jobs and stop once idle (`_drop_lost`); booting ones are counted once ready."""
        live = [m for m in self.members if not m.lost and m.ready]
        excess = sum(1 for m in self.members if not m.lost) - self.policy.max_instances
        for member in sorted(live, key=lambda m: m.busy):  # idle ones first
            if excess <= 0:
                return
            if member.busy == 0:
                await self._leave(member)
            else:
                member.retired = "above max_instances"
            excess -= 1

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
        def write(text: str) -> None:
            self._boot_log(member.log_to, text if text.endswith("\n") else text + "\n")

        beat = BootHeartbeat(write)  # a silent setup() still shows it is running
        beating = asyncio.create_task(beat.run())
        try:
            error = await self._start_member(member, beat.progress)
        finally:
            beating.cancel()
        if error is not None:
            await self._failed_boot(member, error, job)
            return
        self.backoff.succeeded()
        member.ready = True
        self.watcher.changed(self, member)
        _running_on(job, member)
        self._kick.set()  # its other slots may take queued jobs now
        await self._run_on(member, job)

    async def _failed_boot(self, member: Member, error: str, job: Job | None) -> None:
        """The member could not start: it leaves, new boots back off, the job that asked for it
        (none for a warm boot) fails, and so does every queued job when no instance is left."""
        self.members.remove(member)
        self.watcher.gone(member)
        delay = self.backoff.failed(f"setup failed: {error}")
        if job is None:
            log.warning("%s: a warm boot failed (next try in %.0f s): %s", self.name, delay, error)
        else:
            member.busy -= 1
            self._boot_failed(job, f"setup failed: {error}")  # first: stopping may fail too
        if not self.members:  # no instance could run what waits: it fails the same way
            while self.queue:
                self._fail(self.queue.popleft(), f"setup failed: {error}")
        self._kick.set()
        await _stop(member)

    async def _start_member(self, member: Member, progress: Callable[[str], None]) -> str | None:
        """Make and start the member's instance; the error when it could not."""
        try:
            member.instance = await self._make_instance()
            self.watcher.changed(self, member)  # its hardware is known now
            member.slots = await member.instance.start(progress)
        except BootFailed as exc:
            return str(exc)
        except Exception as exc:
            log.exception("booting an instance of %s failed", self.name)
            return str(exc) or type(exc).__name__
        return None

    async def _boot_warm(self, member: Member) -> None:
        """An instance booted ahead of demand: idle once ready; a failure backs off."""
        error = await self._start_member(member, lambda text: None)
        if error is not None:
            await self._failed_boot(member, error, None)
            return
        self.backoff.succeeded()
        member.ready = True
        member.idle_since = asyncio.get_running_loop().time()
        self.watcher.changed(self, member)
        self._kick.set()  # queued jobs may take it now

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
        keep = self.floor
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
