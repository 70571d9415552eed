"""The local backend: instances are worker processes on this machine (`runtime.LocalModel`).

An instance of a GPU SKU first takes GPUs of its own from the machine's `GpuInventory` (waiting
for them when all are held) and its worker sees only those (`CUDA_VISIBLE_DEVICES`); an instance
of a CPU SKU sees none. Stopping the instance, or a failed boot, gives the GPUs back.

Each worker runs in a sandbox where bubblewrap works (`modelyard serve --no-sandbox` turns it
off) and within its SKU's limits (runtime/sandbox.py, docs/security.md).

A new CPU instance of a version used recently starts from a warm template: a worker that already
imported the model's modules (runtime/templates.py). The boot's phases (environment, import,
setup) go to the boot's logs, and into the metrics of the instance's first prediction.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx

from modelyard.billing.hardware import Hardware
from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.runtime.events import Event, Metric, Started
from modelyard.runtime.local import LocalModel
from modelyard.runtime.runner import Health, RunnerState
from modelyard.runtime.sandbox import Limits
from modelyard.runtime.templates import Templates
from modelyard.store.blobs import BlobStore

from .backend import BootFailed, InstanceSpec, Progress
from .gpus import GpuInventory, GpuLease


class LocalInstance:
    """One worker process of a version, with the environment built from its package, and the
    GPUs it holds while it lives."""

    def __init__(
        self,
        spec: InstanceSpec,
        builder: EnvironmentBuilder,
        http_client: httpx.AsyncClient,
        gpus: GpuInventory,
        blobs: BlobStore | None = None,
        templates: Templates | None = None,
    ) -> None:
        self.spec = spec
        self._templates = templates
        self._boot_metrics: dict[str, float] | None = None  # for its first prediction
        self._builder = builder
        self._http = http_client
        self._gpus = gpus
        self._blobs = blobs
        self._lease: GpuLease | None = None
        self._model: LocalModel | None = None

    @property
    def lost(self) -> bool:
        """Never: the machine it runs on is the server's own (a dead worker is restarted)."""
        return False

    @property
    def setup_seconds(self) -> float | None:
        """How long the worker's `setup()` took (`modelyard_instance_setup_seconds`, see
        engine/metrics.py); None before it ran."""
        runner = None if self._model is None else self._model.runner
        result = None if runner is None else runner.setup_result
        return None if result is None else result.completed_at - result.started_at

    @property
    def lease(self) -> GpuLease | None:
        """The GPUs it holds (an empty lease for a CPU SKU); None before `start` and after
        `stop`."""
        return self._lease

    async def start(self, progress: Progress) -> int:
        # GPUs first: waiting for one must not hold a built environment or a started worker.
        # PlacementFailed is a BootFailed (too few GPUs here, or the placement timeout).
        self._lease = await self._gpus.acquire(self.spec.hardware, progress)
        try:
            return await self._start_worker(progress)
        except BaseException:  # a failed or canceled boot frees its worker, then its GPUs
            await self.stop()
            raise

    async def _start_worker(self, progress: Progress) -> int:
        assert self._lease is not None
        try:
            self._model = LocalModel(
                self.spec.package_dir,
                mode=self.spec.mode,
                builder=self._builder,
                weights=await self._weights(),
                setup_timeout=self.spec.setup_timeout,
                http_client=self._http,
                schema=self.spec.schema,
                collect_stream=False,  # the event log keeps a stream's items
                worker_environment=self._lease.environment(),  # the GPUs it sees
                limits=limits_of(self.spec.hardware),
                sandbox=None,  # where bubblewrap works; serve checked it (or --no-sandbox)
                # CPU instances only: a template of a GPU instance would sit on GPUs that
                # another instance may hold by the time it is used.
                templates=None if self._lease.gpus else self._templates,
                template_idle_timeout=self.spec.idle_timeout,
            )
            result = await self._model.start(progress)
            self._boot_metrics = {
                f"boot_{name}": value for name, value in self._model.boot_phases.items()
            }
        except Exception as exc:
            raise BootFailed(str(exc) or type(exc).__name__) from exc
        if result.status != "succeeded":
            raise BootFailed(result.error or "setup failed")
        assert self._model.runner is not None
        return max(1, self._model.runner.slots)  # what the worker reported, not cog.yaml alone

    async def _weights(self) -> str | None:
        """The weights' file on this machine: given, or the blob (from S3: fetched now, by the
        instance that needs it, not by every replica that reads the version)."""
        key = self.spec.weights_key
        if self.spec.weights is not None or key is None or self._blobs is None:
            return self.spec.weights
        return str(await asyncio.to_thread(self._blobs.path, key))

    def predict(
        self, inputs: dict[str, Any], prediction_id: str, context: dict[str, str] | None = None
    ) -> AsyncIterator[Event]:
        if self._model is None:
            raise RuntimeError("start() the instance before predicting")
        events = self._model.predict(inputs, prediction_id=prediction_id, context=context)
        boot, self._boot_metrics = self._boot_metrics, None
        return events if not boot else _with_boot_metrics(events, boot)

    async def cancel(self, prediction_id: str) -> bool:
        return self._model is not None and await self._model.cancel(prediction_id)

    async def health(self) -> Health:
        runner = None if self._model is None else self._model.runner
        if runner is None:
            return Health(RunnerState.STOPPED)
        return await runner.health()

    async def stop(self) -> None:
        try:
            if self._model is not None:
                await self._model.stop()  # the worker has exited (and freed its GPU memory)
                await self._model.discard_outputs()  # the engine stored them as they came
        finally:
            # Even when stopping failed: GPUs kept by a broken instance would be lost for good.
            lease, self._lease = self._lease, None
            if lease is not None:
                self._gpus.release(lease)


async def _with_boot_metrics(
    events: AsyncIterator[Event], boot: dict[str, float]
) -> AsyncIterator[Event]:
    """The first prediction of an instance: the boot's phases (`boot_environment_time`,
    `boot_import_time`, `boot_setup_time`) among its metrics, once it started."""
    async for event in events:
        yield event
        if isinstance(event, Started):
            for name, value in boot.items():
                yield Metric(name, round(value, 4), "replace")


def limits_of(hardware: Hardware) -> Limits:
    """What an instance of `hardware` may use, as the runtime enforces it."""
    return Limits(**dataclasses.asdict(hardware.limits), owner=f"hardware {hardware.sku}")


class LocalBackend:
    """Starts instances as worker processes of this machine, on its GPUs (`gpus`; none when
    not given)."""

    def __init__(
        self,
        builder: EnvironmentBuilder,
        http_client: httpx.AsyncClient,
        gpus: GpuInventory | None = None,
        blobs: BlobStore | None = None,
    ) -> None:
        self.builder = builder
        self.http_client = http_client  # fetches file inputs; the engine serves its own files
        self.gpus = gpus if gpus is not None else GpuInventory()
        self.blobs = blobs  # where a version's weights are (by `InstanceSpec.weights_key`)
        self.templates = Templates()  # warm workers of the versions used last

    def instance(self, spec: InstanceSpec) -> LocalInstance:
        return LocalInstance(
            spec, self.builder, self.http_client, self.gpus, self.blobs, self.templates
        )

    def can_place(self, hardware: Hardware) -> bool:
        """CPU SKUs always; a GPU SKU when this machine has enough GPUs of its model (held by
        other instances or not: it waits for them)."""
        return self.gpus.can_place(hardware)

    async def close(self) -> None:
        try:
            await self.templates.close()
        finally:
            await self.http_client.aclose()
