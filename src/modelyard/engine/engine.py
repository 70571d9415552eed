"""The engine: takes stored predictions, queues them per version, runs them on instances and
turns the runtime's events into the persisted event log.

Nothing is lost across a restart: `start()` requeues predictions that never started and fails,
with an error saying why, those that were running when the server stopped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.cogspec.inputs import InputValidationError
from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.runtime.events import Done, Log, Metric, Output, Started
from modelyard.runtime.local import LocalModel
from modelyard.settings import Settings
from modelyard.store.blobs import BlobStore
from modelyard.store.database import Database
from modelyard.store.deployments import deployment_limits
from modelyard.store.predictions import TERMINAL, NewEvent, unfinished
from modelyard.store.tables import Prediction, Version, utcnow

from .eventlog import EventLog
from .files import PURGE_EVERY, FileService
from .packages import PackageInfo, inspect_package, unpacked
from .pools import Pool, PoolPolicy
from .trainings import training_finisher
from .urls import Urls
from .webhooks import WebhookOutbox

log = logging.getLogger(__name__)

RESTART_ERROR = (
    "The server stopped while this prediction was running, so it did not finish. "
    "Run it again."
)


Finisher = Callable[[Prediction, NewEvent], Awaitable[NewEvent]]


@dataclass(frozen=True)
class PoolKey:
    version_pk: int
    mode: str  # predict | train
    deployment_id: int | None = None


class Engine:
    """Owns the pools, the event log and the file service of one server process."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        blobs: BlobStore,
        builder: EnvironmentBuilder | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self.urls = Urls(settings.public_url)
        self.log = EventLog(db)
        self.webhooks = WebhookOutbox(settings, db, self.urls, self.log)
        self.files = FileService(settings, db, blobs, self.urls)
        self.builder = builder or EnvironmentBuilder()
        self.pools: dict[PoolKey, Pool] = {}
        self._where: dict[str, PoolKey] = {}  # queued or running prediction -> its pool
        self._running: dict[str, LocalModel] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._http = self.files.http_client()
        self.policies: dict[int, PoolPolicy] = {}  # deployment id -> its policy
        # kind -> turns a successful Done into the final event (trainings make a version there)
        self._sweeper: asyncio.Task[None] | None = None
        self.finishers: dict[str, Finisher] = {"training": training_finisher(db, self.files)}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover what a previous run left: requeue the queued, fail the interrupted."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await self.webhooks.start()  # pending webhooks of an earlier run go out again
        with self.db.session() as session:
            leftovers = unfinished(session)
            limits = deployment_limits(session)
        for deployment_id, (low, high) in limits.items():
            self.set_policy(deployment_id, low, high)
        for prediction in leftovers:
            if prediction.status == "processing":
                self.log.append(prediction.id, _done("failed", error=RESTART_ERROR))
            else:
                self.submit(prediction)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="expired files")

    async def _sweep_forever(self) -> None:
        """Expired files leave the disk even when nobody uploads (uploads sweep too)."""
        while True:
            await asyncio.sleep(PURGE_EVERY)
            try:
                await asyncio.to_thread(self.files.purge_expired)
            except Exception:  # housekeeping must not stop; try again next time
                log.exception("sweeping expired files failed")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for timer in self._timers.values():
            timer.cancel()
        for pool in self.pools.values():
            await pool.close()
        self.pools.clear()
        self.log.flush()
        await self._http.aclose()
        await self.webhooks.stop()

    # -- predictions -----------------------------------------------------------------------

    def submit(self, prediction: Prediction) -> None:
        """Queue a stored prediction on its version's (or deployment's) pool."""
        self.webhooks.created(prediction)  # `start` (stored once, also when requeued)
        self.log.track(prediction)
        mode = "train" if prediction.kind == "training" else "predict"
        key = PoolKey(prediction.version_pk, mode, prediction.deployment_id)
        pool = self.pools.get(key) or self._new_pool(key)
        self._where[prediction.id] = key
        if prediction.deadline is not None:
            self._cancel_at(prediction.id, prediction.deadline.timestamp())
        pool.put(prediction.id)

    async def cancel(self, prediction_id: str) -> Prediction | None:
        """Cancel wherever it is; the returned prediction is terminal unless it ignores cancel."""
        key = self._where.get(prediction_id)
        pool = self.pools.get(key) if key else None
        if pool is not None and pool.remove(prediction_id):
            return self._finish(prediction_id, _done("canceled"))
        model = self._running.get(prediction_id)
        if model is not None:
            await model.cancel(prediction_id)
            return await self.log.wait_until(
                prediction_id, lambda p: p.status in TERMINAL, timeout=5.0
            )
        prediction = self.log.snapshot(prediction_id)
        if prediction is not None and prediction.status not in TERMINAL:
            # booting for it, or known to another process: mark it; the runner skips it later
            return self._finish(prediction_id, _done("canceled"))
        return prediction

    def _cancel_at(self, prediction_id: str, when: float) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, when - utcnow().timestamp())
        self._timers[prediction_id] = loop.call_later(
            delay, lambda: asyncio.ensure_future(self.cancel(prediction_id))
        )

    # -- pools -----------------------------------------------------------------------------

    def set_policy(self, deployment_id: int, min_instances: int, max_instances: int) -> None:
        """A deployment's scaling limits, for the pools it has and those it will get."""
        policy = PoolPolicy(
            max_instances=max_instances,
            min_instances=min_instances,
            idle_timeout=self.settings.idle_timeout,
        )
        self.policies[deployment_id] = policy
        for key, pool in self.pools.items():
            if key.deployment_id == deployment_id:
                pool.policy = policy  # read on every dispatch round

    async def forget_deployment(self, deployment_id: int) -> None:
        """A deleted deployment (with nothing queued or running): its pools stop, its policy goes.
        Its id may be given to a new deployment, which must not inherit warm instances."""
        self.policies.pop(deployment_id, None)
        for key in [k for k in self.pools if k.deployment_id == deployment_id]:
            await self.pools.pop(key).close()

    def _new_pool(self, key: PoolKey) -> Pool:
        policy = self.policies.get(key.deployment_id or -1) or PoolPolicy(
            max_instances=self.settings.max_instances, idle_timeout=self.settings.idle_timeout
        )

        async def make_model() -> LocalModel:
            return await self._model_for(key)

        pool = Pool(
            name=f"{key.mode}:{key.version_pk}",
            policy=policy,
            make_model=make_model,
            run=self._run,
            boot_log=self._boot_log,
            boot_failed=lambda pid, error: self._finish(pid, _done("failed", error=error)),
        )
        self.pools[key] = pool
        pool.start()
        return pool

    async def _model_for(self, key: PoolKey) -> LocalModel:
        with self.db.session() as session:
            version = session.get(Version, key.version_pk)
            if version is None:
                raise LookupError("this version was deleted")
            package_key, weights_key = version.package_key, version.weights_key
        directory = self.package_dir(package_key)
        weights = str(self.blobs.path(weights_key)) if weights_key else None
        return LocalModel(
            directory,
            mode=key.mode,
            builder=self.builder,
            weights=weights,
            http_client=self._http,
        )

    def package_dir(self, package_key: str) -> Path:
        """The unpacked package of a version (unpacked once, shared by its instances)."""
        return unpacked(self.blobs, self.settings.package_dir, package_key)

    def inspect_package(self, package_key: str) -> PackageInfo:
        """A pushed archive's config, schema and Cog version; raises `InvalidPackage`."""
        return inspect_package(self.blobs, self.settings.package_dir, package_key)

    def _boot_log(self, prediction_id: str, text: str) -> None:
        """Build progress comes from a thread, setup logs from the loop: both land in the log."""
        if threading.get_ident() == self._loop_thread:
            self._append_log(prediction_id, text)
        else:
            self._loop.call_soon_threadsafe(self._append_log, prediction_id, text)

    def _append_log(self, prediction_id: str, text: str) -> None:
        self.log.append(prediction_id, NewEvent("logs", text))

    # -- running one prediction ------------------------------------------------------------

    async def _run(self, model: LocalModel, prediction_id: str) -> None:
        prediction = self.log.snapshot(prediction_id)
        if prediction is None or prediction.status in TERMINAL:
            self._where.pop(prediction_id, None)
            return
        try:
            inputs = model.validate(prediction.input)
        except InputValidationError as exc:
            self._finish(prediction_id, _done("failed", error=exc.detail()))
            return
        inputs = self.files.rewrite_inputs(inputs, model.file_fields)
        self._running[prediction_id] = model
        account_id = prediction.account_id
        try:
            async for event in model.predict(inputs, prediction_id=prediction_id):
                if isinstance(event, Started):
                    # At once, not grouped: after a crash, a prediction that started must be
                    # found `processing` (and failed), never requeued to run a second time.
                    self.log.append(prediction_id, NewEvent("status", {"status": "processing"}))
                elif isinstance(event, Log):
                    self.log.append(prediction_id, NewEvent("logs", event.text), urgent=False)
                elif isinstance(event, Output):
                    value = self.files.outputs_to_urls(account_id, prediction_id, event.value)
                    self.log.append(prediction_id, NewEvent("output", value), urgent=False)
                elif isinstance(event, Metric):
                    data = {"name": event.name, "value": event.value, "mode": event.mode}
                    self.log.append(prediction_id, NewEvent("metric", data), urgent=False)
                elif isinstance(event, Done):
                    final = self._done_event(prediction, event)
                    finisher = self.finishers.get(prediction.kind)
                    if finisher is not None and event.status == "succeeded":
                        final = await finisher(prediction, final)
                    self._finish(prediction_id, final)
        finally:
            self._running.pop(prediction_id, None)
            if self.log.snapshot(prediction_id).status not in TERMINAL:  # type: ignore[union-attr]
                self._finish(prediction_id, _done("failed", error="the prediction ended early"))

    def _done_event(self, prediction: Prediction, done: Done) -> NewEvent:
        metrics = dict(done.metrics)
        if done.predict_time is not None:
            metrics["predict_time"] = done.predict_time
        if done.is_stream:  # the items already arrived as output events
            output = self.log.snapshot(prediction.id).output  # type: ignore[union-attr]
        else:
            output = self.files.outputs_to_urls(prediction.account_id, prediction.id, done.output)
        event = _done(done.status, output=output, error=done.error, metrics=metrics)
        event.data["streamed"] = done.is_stream
        return event

    def _finish(self, prediction_id: str, event: NewEvent) -> Prediction:
        self._where.pop(prediction_id, None)
        timer = self._timers.pop(prediction_id, None)
        if timer is not None:
            timer.cancel()
        return self.log.append(prediction_id, event)


def _done(
    status: str,
    *,
    output: Any = None,
    error: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> NewEvent:
    data: dict[str, Any] = {"status": status, "error": error, "metrics": metrics or {}}
    if output is not None or status == "succeeded":
        data["output"] = output
    return NewEvent("done", data)

