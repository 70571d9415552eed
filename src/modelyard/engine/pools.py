"""A pool of instances for one version (or deployment): a FIFO queue, instances started on
demand up to a maximum, and instances stopped when idle (scale to zero).

A prediction waits in the queue while every slot is busy: never a 409.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from modelyard.runtime.local import LocalModel

log = logging.getLogger(__name__)

MakeModel = Callable[[], Awaitable[LocalModel]]
RunPrediction = Callable[[LocalModel, str], Awaitable[None]]
BootLog = Callable[[str, str], None]  # (prediction id, text)
BootFailed = Callable[[str, str], None]  # (prediction id, error)


@dataclass
class Instance:
    """One running (or booting) worker of the pool's version."""

    model: LocalModel | None  # None while it is being created
    slots: int
    ready: bool = False
    busy: int = 0
    idle_since: float = 0.0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # Who sees setup logs: the prediction that booted it, then, when a crashed worker is
    # replaced on the next prediction's way in, that prediction.
    log_to: str = ""

    @property
    def free(self) -> bool:
        return self.ready and self.busy < self.slots


@dataclass(frozen=True)
class PoolPolicy:
    max_instances: int = 1
    min_instances: int = 0
    idle_timeout: float = 300.0


class Pool:
    """Runs queued predictions of one version on up to `max_instances` instances."""

    def __init__(
        self,
        name: str,
        policy: PoolPolicy,
        make_model: MakeModel,
        run: RunPrediction,
        boot_log: BootLog,
        boot_failed: BootFailed,
    ) -> None:
        self.name = name
        self.policy = policy
        self._make_model = make_model
        self._run = run
        self._boot_log = boot_log
        self._boot_failed = boot_failed
        self.queue: deque[str] = deque()
        self.instances: list[Instance] = []
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._dispatch(), name=f"pool {self.name}")

    def put(self, prediction_id: str) -> None:
        self.queue.append(prediction_id)
        self._kick.set()

    def remove(self, prediction_id: str) -> bool:
        """Take a queued prediction out; False if it already left the queue."""
        try:
            self.queue.remove(prediction_id)
        except ValueError:
            return False
        return True

    @property
    def idle(self) -> bool:
        return not self.queue and all(i.busy == 0 for i in self.instances)

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            self._kick.clear()
            while self.queue:
                instance = next((i for i in self.instances if i.free), None)
                if instance is not None:
                    self._launch(instance, self.queue.popleft(), self._run_on)
                elif len(self.instances) < self.policy.max_instances:
                    self._boot(self.queue.popleft())
                else:
                    break
            await self._stop_idle(loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout=self._tick())

    def _tick(self) -> float:
        return max(0.05, min(5.0, self.policy.idle_timeout / 2))

    def _launch(
        self,
        instance: Instance,
        prediction_id: str,
        job: Callable[[Instance, str], Awaitable[None]],
    ) -> None:
        instance.busy += 1
        task = asyncio.create_task(job(instance, prediction_id), name=f"run {prediction_id}")
        instance.tasks.add(task)
        task.add_done_callback(instance.tasks.discard)

    async def _run_on(self, instance: Instance, prediction_id: str) -> None:
        assert instance.model is not None
        instance.log_to = prediction_id
        try:
            await self._run(instance.model, prediction_id)
        except Exception:  # a bug of ours must not stop the pool
            log.exception("prediction %s failed inside the engine", prediction_id)
        finally:
            instance.busy -= 1
            instance.idle_since = asyncio.get_running_loop().time()
            self._kick.set()

    def _boot(self, prediction_id: str) -> None:
        """A new instance; the prediction that asked for it sees its build and setup logs."""
        instance = Instance(model=None, slots=1, log_to=prediction_id)
        self.instances.append(instance)
        self._launch(instance, prediction_id, self._boot_then_run)

    async def _boot_then_run(self, instance: Instance, prediction_id: str) -> None:
        def progress(text: str) -> None:
            self._boot_log(instance.log_to, text if text.endswith("\n") else text + "\n")

        try:
            instance.model = await self._make_model()
            setup = await instance.model.start(progress)
            error = setup.error if setup.status != "succeeded" else None
        except Exception as exc:  # noqa: BLE001 - build and package errors end this prediction
            error = str(exc) or type(exc).__name__
        if error is not None:
            self.instances.remove(instance)
            instance.busy -= 1
            if instance.model is not None:
                await instance.model.stop()
            self._boot_failed(prediction_id, f"setup failed: {error}")
            self._kick.set()
            return
        instance.slots = max(1, instance.model.config.concurrency_max)
        instance.ready = True
        await self._run_on(instance, prediction_id)

    async def _stop_idle(self, now: float) -> None:
        keep = self.policy.min_instances
        for instance in list(self.instances):
            if len(self.instances) <= keep:
                return
            if instance.ready and instance.busy == 0 and not self.queue:
                if now - instance.idle_since >= self.policy.idle_timeout:
                    self.instances.remove(instance)
                    if instance.model is not None:
                        await instance.model.stop()

    async def close(self) -> None:
        self._closed = True
        self._kick.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        tasks = [t for i in self.instances for t in i.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for instance in self.instances:
            if instance.model is not None:
                await instance.model.stop()
        self.instances.clear()
