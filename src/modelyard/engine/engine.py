"""The engine: takes stored predictions, queues them per version, runs them on instances that a
backend provides, and turns the instances' events into the persisted event log.

Each queued or running prediction is one `Job` in `Engine.jobs`; cancel and deadlines act on it.
Nothing is lost across a restart: `start()` requeues predictions that never started and fails,
with an error saying why, those that were running when the server stopped. A graceful stop
(`stop()`) gives running predictions `SHUTDOWN_GRACE` seconds to finish first.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from modelyard.billing.hardware import HardwareTable
from modelyard.cogspec.inputs import InputValidationError, validate_input
from modelyard.runtime.events import Done, Log, Metric, Output, Started
from modelyard.runtime.waiting import CANCEL_GRACE
from modelyard.settings import Settings
from modelyard.store.blobs import BlobStore
from modelyard.store.database import Database
from modelyard.store.predictions import (
    TERMINAL,
    NewEvent,
    NewPrediction,
    create_prediction,
    done_event,
)
from modelyard.store.space import NO_SPACE, NoSpaceLeft, out_of_space
from modelyard.store.tables import File, Prediction, utcnow
from modelyard.store.webhooks import enqueue
from modelyard.store.writer import Writer

from .backend import Backend, Instance, InstanceLost, InstanceSpec, Mode
from .eventlog import EventLog
from .files import PURGE_EVERY, FileService
from .instances import InstanceBoard
from .jobs import Job, JobState, PoolKey
from .metering import Metering
from .packages import PackageInfo
from .policies import InstanceControl
from .pools import Pool, PoolPolicy
from .replicas import RESTART_ERROR, Replica
from .retention import sweep
from .specs import Specs
from .trainings import training_finisher
from .urls import Urls
from .webhooks import WebhookOutbox

log = logging.getLogger(__name__)

# Seconds a cancel waits for a running prediction to end: one that ignores the cancel has its
# worker killed after CANCEL_GRACE, so the answer says how it ended.
CANCEL_WAIT = CANCEL_GRACE + 3.0
SHUTDOWN_GRACE = 5.0  # seconds running predictions get to finish when the server stops
DEADLINE_LOG = "Canceled: the prediction reached its deadline (Cancel-After).\n"

# kind -> turns a successful Done into the final event (trainings make a version there)
Finisher = Callable[[Prediction, NewEvent, Sequence[File]], Awaitable[NewEvent]]


class Refused(Exception):
    """A create that `Engine.create`'s `refuse` check turned down; `reason` is what it said."""

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


class Engine:
    """Owns the jobs, the pools, the event log and the file service of one server process."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        writer: Writer,
        blobs: BlobStore,
        files: FileService,
        backend: Backend,
        *,
        hardware: HardwareTable | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.writer = writer
        self.blobs = blobs
        self.files = files
        self.backend = backend
        # The SKUs models and deployments choose from: Replicate's, unless the platform read
        # a hardware file (billing.hardware.load_hardware).
        self.hardware = hardware if hardware is not None else HardwareTable()
        self.urls: Urls = files.urls
        self.metering = Metering(writer, self.hardware)  # the ledger (metering.py)
        self.log = EventLog(db, writer, self.metering)
        self.webhooks = WebhookOutbox(settings, db, writer, self.urls, self.log)
        self.jobs: dict[str, Job] = {}
        self.pools: dict[PoolKey, Pool] = {}
        self.policies: dict[int, PoolPolicy] = {}  # deployment id -> its policy
        self.specs = Specs(settings, db, blobs, backend, self.hardware, self.policies)
        self._tasks: set[asyncio.Task[Any]] = set()  # referenced until they end
        self._sweeper: asyncio.Task[None] | None = None
        self.finishers: dict[str, Finisher] = {"training": training_finisher(db, self.files)}
        self.replica = Replica(self)  # its lease on what it runs, among replicas (replicas.py)
        self.instances = InstanceBoard(settings, writer, lambda: self.replica.id)  # for owners
        self.instances.listeners.append(self.metering)
        self.control = InstanceControl(self)  # deployments' releases -> their pools
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover what a previous run left: requeue the queued, fail the interrupted (on a
        shared database, only what no live replica owns: `Replica.start`)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await self.webhooks.start()  # pending webhooks of an earlier run go out again
        await self.control.load()  # deployments' policies, before recovery queues anything
        await self.replica.start()
        await self.instances.start()
        self.control.start()  # keeps min_instances warm (one replica per deployment)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="expired files")

    async def _sweep_forever(self) -> None:
        """Expired files, and data past its retention, go even when nobody uploads."""
        while True:
            await asyncio.sleep(PURGE_EVERY)
            try:
                await sweep(self)  # retention.py
            except Exception:  # housekeeping must not stop; try again next time
                log.exception("sweeping expired files and data failed")

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Start nothing more, give running predictions `grace` seconds to finish and fail the
        rest with `RESTART_ERROR` (queued ones stay queued: the next start runs them); then stop
        the pools, commit what the event log holds, stop sending webhooks. Each step runs even
        when one before it failed (logged): a shutdown must not stop half way."""
        self._stopping = True
        self.replica.pause()  # no claims while stopping; it leaves once nothing runs here
        if self._sweeper is not None:
            self._sweeper.cancel()
        for pool in self.pools.values():
            try:
                await pool.pause()
            except Exception:
                log.exception("pausing a pool failed")
        await self._let_running_finish(grace)
        for job in self.jobs.values():
            if job.deadline is not None:
                job.deadline.cancel()
        for task in list(self._tasks):
            task.cancel()
        steps: list[Awaitable[Any]] = [pool.close() for pool in self.pools.values()]
        steps += [asyncio.gather(*self._tasks, return_exceptions=True), self.instances.close()]
        steps += [self.log.drain(), self.backend.close(), self.webhooks.stop()]
        steps += [self.replica.stop()]  # last: what it hands back is no longer running here
        self.pools.clear()
        for step in steps:
            try:
                await step
            except Exception:
                log.exception("a step of the engine's shutdown failed")

    async def _let_running_finish(self, grace: float) -> None:
        """Wait (at most `grace` seconds) until no prediction runs; fail those still running."""
        loop = asyncio.get_running_loop()
        until = loop.time() + grace
        while self._running() and loop.time() < until:
            await asyncio.sleep(0.05)
        for job in self._running():
            self._finish(job.prediction_id, done_event("failed", error=RESTART_ERROR))

    def _running(self) -> list[Job]:
        """Jobs whose prediction started on a worker (`processing`): a job still waiting for a
        worker's slot has not started, and stays queued for the next start."""
        running = []
        for job in self.jobs.values():
            prediction = self.log.known(job.prediction_id)
            started = prediction is not None and prediction.status == "processing"
            if job.state in (JobState.RUNNING, JobState.FINISHING) and started:
                running.append(job)
        return running

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        """A background task, referenced until it ends (the loop keeps only weak references)."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- predictions -----------------------------------------------------------------------

    async def create(
        self,
        new: NewPrediction,
        inputs: dict[str, Any],
        refuse: Callable[[Connection], Any] | None = None,
    ) -> Prediction:
        """Store a prediction (with its `start` webhook, in one transaction) and queue it with
        its validated `inputs`. `refuse`, when given, runs first in that transaction: when it
        returns something, nothing is stored (what it wrote is) and `Refused` carries it."""
        outbox = self.webhooks

        def store(connection: Connection) -> Prediction | Refused:
            reason = refuse(connection) if refuse is not None else None
            if reason is not None:
                return Refused(reason)
            prediction = create_prediction(connection, new, owner=self.replica.id)
            delivery = outbox.start_delivery(prediction)
            if delivery is not None:
                enqueue(connection, delivery)
            return prediction

        def queue(done: Future[Prediction | Refused]) -> None:
            if done.exception() is None and isinstance(stored := done.result(), Prediction):
                if new.webhook:
                    self.webhooks.wake()
                self.submit(stored, inputs)

        # Queued by the commit's callback, not by this coroutine: a request canceled while the
        # commit runs must not leave a stored prediction that nothing will run.
        result = await asyncio.wrap_future(self.writer.submit_then(store, queue))
        if isinstance(result, Refused):
            raise result
        return result

    def submit(self, prediction: Prediction, inputs: dict[str, Any] | None = None) -> None:
        """Queue a stored prediction on its version's (or deployment's) pool."""
        self.log.track(prediction)
        mode: Mode = "train" if prediction.kind == "training" else "predict"
        key = PoolKey(prediction.version_pk, mode, prediction.deployment_id)
        job = Job(prediction.id, key, inputs)
        self.jobs[prediction.id] = job
        if prediction.deadline is not None:
            delay = max(0.0, prediction.deadline.timestamp() - utcnow().timestamp())
            loop = asyncio.get_running_loop()
            job.deadline = loop.call_later(delay, self._expired, prediction.id)
        pool = self.pools.get(key) or self._new_pool(key)
        pool.put(job)

    def _expired(self, prediction_id: str) -> None:
        self._append_log(prediction_id, DEADLINE_LOG)
        self._spawn(self.cancel(prediction_id), name=f"deadline {prediction_id}")

    async def cancel(self, prediction_id: str) -> Prediction | None:
        """Cancel wherever it is; the returned prediction is terminal unless it ignores cancel."""
        job = self.jobs.get(prediction_id)
        if job is None:
            prediction = await self.log.latest(prediction_id)
            if prediction is None or prediction.status in TERMINAL:
                return prediction
            # Another replica runs it (asked to cancel it there), or nobody does any more.
            if not await self.replica.cancel_elsewhere(prediction):
                return await self._finish_now(prediction_id, done_event("canceled"))
        elif job.state is JobState.QUEUED:
            pool = self.pools.get(job.key)
            if pool is not None and pool.remove(job):
                return await self._finish_now(prediction_id, done_event("canceled"))
        elif job.state is JobState.BOOTING:  # it will not run when its instance is ready
            return await self._finish_now(prediction_id, done_event("canceled"))
        elif job.state is JobState.RUNNING and job.instance is not None:
            job.cancel_requested = True  # sent again once the worker has it (see `_run`)
            await job.instance.cancel(prediction_id)
        return await self.log.wait_until(
            prediction_id, lambda p: p.status in TERMINAL, timeout=CANCEL_WAIT
        )

    # -- pools -----------------------------------------------------------------------------

    def hardware_changed(self) -> None:
        """A model's hardware changed: instances booted from now on read it again. Those running
        keep their machine until they scale down. A boot that failed is tried again at once: the
        new hardware may be what it lacked. (A deployment's: `InstanceControl.apply`.)"""
        self.specs.forget(None)
        self.metering.forget()
        for key, pool in self.pools.items():
            if key.deployment_id is None:
                pool.backoff.reset()

    def _new_pool(self, key: PoolKey) -> Pool:
        policy = self.policies.get(key.deployment_id or -1) or PoolPolicy(
            max_instances=self.settings.max_instances, idle_timeout=self.settings.idle_timeout
        )

        async def make_instance() -> Instance:
            return self.backend.instance(await self.specs.get(key))

        pool = Pool(
            name=f"{key.mode}:{key.version_pk}",
            policy=policy,
            make_instance=make_instance,
            run=self._run,
            boot_log=self._boot_log,
            boot_failed=self._boot_failed,
            watcher=self.instances.watcher(key),
        )
        self.pools[key] = pool
        self.control.configure(pool, key)
        pool.start()
        return pool

    def _boot_failed(self, job: Job, error: str) -> None:
        self._finish(job.prediction_id, done_event("failed", error=error))

    def package_dir(self, package_key: str) -> Path:
        """The unpacked package of a version (unpacked once, shared by its instances)."""
        return self.specs.package_dir(package_key)

    def inspect_package(self, package_key: str) -> PackageInfo:
        """A pushed archive's config, schema and Cog version; raises `InvalidPackage`."""
        return self.specs.inspect_package(package_key)

    def _boot_log(self, prediction_id: str, text: str) -> None:
        """Build progress comes from a thread, setup logs from the loop: both land in the log."""
        if threading.get_ident() == self._loop_thread:
            self._append_log(prediction_id, text)
        else:
            self._loop.call_soon_threadsafe(self._append_log, prediction_id, text)

    def _append_log(self, prediction_id: str, text: str) -> None:
        if self.log.known(prediction_id) is not None:  # not once it is over (and forgotten)
            self.log.append(prediction_id, NewEvent("logs", text))

    # -- running one prediction ------------------------------------------------------------

    async def _inputs(self, job: Job, spec: InstanceSpec, prediction: Prediction) -> dict[str, Any]:
        """The validated input: as the API validated it, or (requeued after a restart) validated
        again against the same stored schema. Own file URLs are rewritten for the instance (a
        database read: off the loop)."""
        inputs = job.inputs
        if inputs is None:
            inputs = validate_input(spec.schema, prediction.input, spec.component)
        if not spec.file_fields:
            return inputs
        return await asyncio.to_thread(self.files.rewrite_inputs, inputs, spec.file_fields)

    async def _run(self, instance: Instance, job: Job) -> None:
        prediction_id = job.prediction_id
        if not await self.replica.may_run(prediction_id):  # lost with a lapsed lease
            return
        prediction = self.log.known(prediction_id)
        if prediction is None or prediction.status in TERMINAL:  # canceled while it waited
            self.jobs.pop(prediction_id, None)
            return
        account_id = prediction.account_id
        requeued = False
        try:
            try:
                inputs = await self._inputs(job, await self.specs.get(job.key), prediction)
            except InputValidationError as exc:
                self._finish(prediction_id, done_event("failed", error=f"invalid input: {exc}"))
                return
            # The caller's W3C trace context reaches the worker in the request's `context`
            # (`cog.current_scope().context`), as Cog carries it into its worker; only when
            # there is one, so instances that take no context are called as before.
            trace = prediction.trace_context
            events = (
                instance.predict(inputs, prediction_id, context=trace)
                if trace
                else instance.predict(inputs, prediction_id)
            )
            async for event in events:
                if isinstance(event, Started):
                    # At once, not grouped: after a crash, a prediction that started must be
                    # found `processing` (and failed), never requeued to run a second time.
                    self.log.append(prediction_id, NewEvent("status", {"status": "processing"}))
                    if job.cancel_requested:  # asked before the worker had it
                        await instance.cancel(prediction_id)
                elif isinstance(event, Log):
                    self.log.append(prediction_id, NewEvent("logs", event.text), urgent=False)
                elif isinstance(event, Output):
                    stored = await self.files.store_outputs(account_id, prediction_id, event.value)
                    self.log.append(prediction_id, NewEvent("output", stored.value), urgent=False)
                elif isinstance(event, Metric):
                    data = {"name": event.name, "value": event.value, "mode": event.mode}
                    self.log.append(prediction_id, NewEvent("metric", data), urgent=False)
                elif isinstance(event, Done):
                    job.state = JobState.FINISHING
                    self._finish(prediction_id, await self._final_event(prediction, event))
        except InstanceLost:  # gone before it started: its pool runs it again (pools.py)
            requeued = True
            raise
        except Exception as exc:  # noqa: BLE001 - ours, the database, a full disk: it ends
            error = _internal_error(prediction_id, exc)
            self._finish(prediction_id, done_event("failed", error=error))
        finally:
            latest = None if requeued else self.log.known(prediction_id)
            # Stopping: what started was failed with the restart error; what did not stays queued.
            if latest is not None and latest.status not in TERMINAL and not self._stopping:
                ended_early = done_event("failed", error="the prediction ended early")
                self._finish(prediction_id, ended_early)
            if not requeued:
                self.jobs.pop(prediction_id, None)

    async def _final_event(self, prediction: Prediction, done: Done) -> NewEvent:
        metrics = dict(done.metrics)
        if done.predict_time is not None:
            metrics["predict_time"] = done.predict_time
        files: Sequence[File] = ()
        if done.is_stream:  # the items already arrived as output events
            output = prediction.output
        else:
            stored = await self.files.store_outputs(
                prediction.account_id, prediction.id, done.output
            )
            output, files = stored.value, stored.files
        event = done_event(done.status, output=output, error=done.error, metrics=metrics)
        event.data["streamed"] = done.is_stream
        finisher = self.finishers.get(prediction.kind)
        if finisher is not None and done.status == "succeeded":
            event = await finisher(prediction, event, files)
        return event

    def _finish(self, prediction_id: str, event: NewEvent) -> Prediction:
        job = self.jobs.pop(prediction_id, None)
        if job is not None and job.deadline is not None:
            job.deadline.cancel()
        return self.log.append(prediction_id, event)

    async def _finish_now(self, prediction_id: str, event: NewEvent) -> Prediction:
        """`_finish`, returning once the end is committed (an answer the API may give); if the
        commit does not come in time, what the database holds."""
        prediction = self._finish(prediction_id, event)
        if await self.log.settled(prediction_id, CANCEL_WAIT):
            return prediction
        return await asyncio.to_thread(self.log.stored, prediction_id) or prediction


def _internal_error(prediction_id: str, exc: Exception) -> str:
    """The error of a prediction the engine itself could not finish; a full disk is said plainly
    and logged in one line (the log's repeat filter collapses many), anything else with its
    traceback."""
    if out_of_space(exc):
        log.warning("prediction %s failed: %s", prediction_id, exc)
        return str(exc) if isinstance(exc, NoSpaceLeft) else f"{NO_SPACE}: {exc}"
    log.exception("prediction %s failed inside the engine", prediction_id)
    return f"internal error: {exc}"
