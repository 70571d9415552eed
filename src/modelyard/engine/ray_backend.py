"""The Ray backend: every instance is a detached Ray actor (`ray_actor.ModelActor`) on a node that
offers its SKU, shared by the API replicas. docs/ray.md says how to start the nodes.

Placement. An instance of a CPU SKU asks for one CPU (`num_cpus=1`). An instance of a GPU SKU
asks for its GPUs (`num_gpus`, so Ray picks which and sets `CUDA_VISIBLE_DEVICES`, which the
worker inherits) and for the SKU's `Hardware.ray_resources` (`sku-gpu-t4: 1` by default: a node
offers `gpu-t4` with `ray start --num-gpus 4 --resources '{"sku-gpu-t4": 4}'`), and no CPU, so a
GPU node's CPUs never keep its GPUs idle. The hardware table's `resources` replace the custom
resource (Ray's own `accelerator_type:T4: 0.001`, say); a `CPU` or `GPU` there sets the counts.

Names. An actor is named `<version>:<mode>:<pool>:<sku>:<i>` in namespace `modelyard`, `<pool>`
being `model` or `deployment-<id>` and `<i>` the lowest index this replica's pool does not use
yet (below its `max_instances`). Replicas ask for the actor by name (`get_if_exists=True`), so
the second one shares what the first made: `max_instances` holds for the cluster, not per replica.
A shared actor limits its concurrency to its slots itself (calls beyond them wait inside it).

Life (the actor's side is in ray_actor.py):
- A replica's instance holds a lease on its actor, renewed every `LEASE_RENEW` seconds, that
  lapses `LEASE_TTL` seconds after the last renewal. The pool decides when its instance is idle
  (scale to zero after `idle_timeout`, never below a deployment's `min_instances`) and then stops
  it: `stop()` releases the lease, and the actor exits at once if no other replica holds it and
  nothing runs on it. Forgetting a deployment and shutting a replica down stop instances the same
  way, so a replica's shutdown does not take an instance another replica still holds.
- An actor nobody holds (its replicas died) exits once idle for `idle_timeout`: resources are
  freed even when no replica is left to free them. Actors are detached for this: their life is
  theirs, not that of the replica that made them.
- A boot that fails (environment, `setup()`) or waits past `placement_timeout` kills its actor.

Placement waits. While no node can take the actor, `start` reports every `WAIT_REPORT_EVERY`
seconds what it waits for (the SKU and its resources; whether no node offers them or all that do
are busy); after `placement_timeout` it kills the pending actor and fails the boot.

Lost machines. When a node dies, calls to its actors fail: at once once the GCS has declared it
dead (about a second with the head's health checks tuned, docs/ray.md; 15 s with Ray's
defaults), or as "unavailable" when the connection breaks first (a running prediction's, within
seconds). A prediction that had started ends `failed` with `LOST_ERROR`; one that had not raises
`InstanceLost`, and the pool runs it again first in line. Either way the instance reports `lost`
and the pool replaces it when jobs are waiting. An instance whose lease renewal finds its actor
dead is `lost` too.

Connecting. The replica is a Ray driver: `ray.init(address=settings.ray_address or "auto")` in
namespace `modelyard`, so it must run on a machine that is a node of the cluster (the head, or a
node started with `--num-cpus 0` for the API replicas); Ray Client (`ray://`) streams no
generators and is not supported. `RAY_AUTH_MODE=token` and `RAY_AUTH_TOKEN_PATH` (or
`RAY_AUTH_TOKEN`) in the replica's environment authenticate it when the cluster uses tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import (
    ActorDiedError,
    NodeDiedError,
    ObjectLostError,
    RayActorError,
    WorkerCrashedError,
)

from modelyard.billing.hardware import Hardware
from modelyard.runtime.events import Done, Event, Started
from modelyard.runtime.runner import Health, RunnerState
from modelyard.settings import Settings

from .backend import BootFailed, InstanceLost, InstanceSpec, Progress
from .ray_actor import STOPPING, ModelActor, NodeConfig

NAMESPACE = "modelyard"
LEASE_TTL = 30.0  # seconds a replica's hold on an actor lasts unrenewed
LEASE_RENEW = 5.0
FIRST_WAIT_REPORT = 1.0  # seconds without placement before the progress says it waits
WAIT_REPORT_EVERY = 10.0
TOTALS_FOR = 2.0  # seconds `can_place` trusts what it last learnt of the cluster's resources
ATTACH_TRIES = 4  # actors found dying or dead, or machines lost during a boot, before giving up
LOST_ERROR = "The machine running this prediction was lost ({}). Run it again."
# What a machine that went away looks like to a caller of its actor.
LOST_ERRORS = (RayActorError, WorkerCrashedError, NodeDiedError, ObjectLostError)


def placement(hardware: Hardware) -> dict[str, Any]:
    """The actor options that place an instance of `hardware` (see the module docstring)."""
    resources = dict(hardware.ray_resources)
    num_cpus = resources.pop("CPU", 0.0 if hardware.gpus else 1.0)
    num_gpus = resources.pop("GPU", float(hardware.gpus))
    return {"num_cpus": num_cpus, "num_gpus": num_gpus, "resources": resources}


def needs(hardware: Hardware) -> dict[str, float]:
    """What a node must offer for one instance, in Ray's names (`CPU`, `GPU`, custom)."""
    options = placement(hardware)
    wanted = {"CPU": options["num_cpus"], "GPU": options["num_gpus"], **options["resources"]}
    return {name: float(amount) for name, amount in wanted.items() if amount > 0}


class _Gone(Exception):
    """The actor went away (or was going) before the boot finished: attach again."""


class RayInstance:
    """One instance as seen from a replica: a handle on its actor, and this replica's lease."""

    def __init__(self, backend: RayBackend, spec: InstanceSpec, base: str, index: int) -> None:
        self.spec = spec
        self.name = f"{base}:{index}"
        self._backend = backend
        self._base, self._index = base, index
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._actor: Any = None  # the ActorHandle once booted
        self._lost: str | None = None  # why, once lost
        self._renewer: asyncio.Task[None] | None = None
        self.node_id: str | None = None
        self.node_ip: str | None = None

    @property
    def lost(self) -> bool:
        return self._lost is not None

    # -- start ---------------------------------------------------------------------------------

    async def start(self, progress: Progress) -> int:
        for _ in range(ATTACH_TRIES):
            actor = await asyncio.to_thread(self._create)
            try:
                slots = await self._boot(actor, progress)
            except _Gone as gone:
                progress(f"The instance's actor went away ({gone}); starting it again")
                await asyncio.to_thread(self._forget, actor)
                continue
            self._actor = actor
            self._renewer = asyncio.create_task(self._renew(), name=f"lease {self.name}")
            return slots
        raise BootFailed(f"the instance's machine went away {ATTACH_TRIES} times while it started")

    def _create(self) -> Any:
        """The pool's actor of this name: the one that exists, or a new one (placed by Ray)."""
        return self._backend.actor_class.options(  # type: ignore[attr-defined]
            name=self.name,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=0,
            **placement(self.spec.hardware),
        ).remote(self.spec, self._backend.node_config, self.holder, LEASE_TTL)

    async def _boot(self, actor: Any, progress: Progress) -> int:
        """Wait for placement (saying what for), then relay the boot's progress."""
        items = _values(actor.boot.options(num_returns="streaming").remote(self.holder, LEASE_TTL))
        first = asyncio.ensure_future(anext(items))
        loop = asyncio.get_running_loop()
        began = loop.time()
        report_at = began + FIRST_WAIT_REPORT
        deadline = began + self._backend.settings.placement_timeout
        while not first.done():
            await asyncio.wait({first}, timeout=max(0.0, min(report_at, deadline) - loop.time()))
            if first.done():
                break
            if loop.time() >= deadline:
                first.cancel()
                await asyncio.to_thread(_kill, actor)
                raise BootFailed(await self._waiting(loop.time() - began, timed_out=True))
            progress(await self._waiting(loop.time() - began))
            report_at = loop.time() + WAIT_REPORT_EVERY
        try:
            _, self.node_id, self.node_ip = first.result()
            progress(f"Running on Ray node {self.node_ip} ({self.node_id})")
            async for item in items:
                if item[0] == "log":
                    progress(item[1])
                elif item[0] == "ready":
                    return int(item[1])
                elif item[0] == "failed":
                    await asyncio.to_thread(_kill, actor)  # its resources go back now
                    raise BootFailed(item[1])
                elif item[0] == STOPPING:
                    raise _Gone("it was stopping")
        except LOST_ERRORS as exc:
            raise _Gone(_reason(exc)) from exc
        raise _Gone("its boot ended early")

    async def _waiting(self, waited: float, timed_out: bool = False) -> str:
        """What the boot waits for, and why it cannot have it yet."""
        hardware = self.spec.hardware
        wanted = needs(hardware)
        totals = await asyncio.to_thread(ray.cluster_resources)
        offered = all(totals.get(name, 0.0) >= amount for name, amount in wanted.items())
        what = ", ".join(f"{name}: {amount:g}" for name, amount in wanted.items())
        why = (
            "every node offering it is busy" if offered else "no node of the Ray cluster offers it"
        )
        limit = self._backend.settings.placement_timeout
        if timed_out:
            return f"no Ray node could take {hardware.sku} ({what}) within {limit:g} s: {why}"
        return (
            f"Waiting for a Ray node for {hardware.sku} ({what}): {why} "
            f"({waited:.0f} s of at most {limit:g} s)"
        )

    def _forget(self, actor: Any) -> None:
        """Kill a dead or dying actor and wait until its name is free for a new one."""
        _kill(actor)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                current = ray.get_actor(self.name, namespace=NAMESPACE)
            except ValueError:
                return
            if current._actor_id != actor._actor_id:
                return
            time.sleep(0.1)

    async def _renew(self) -> None:
        """Keep this replica's lease; an actor found dead makes the instance lost."""
        while True:
            await asyncio.sleep(LEASE_RENEW)
            try:
                alive = await self._actor.hold.remote(self.holder, LEASE_TTL)
            except ActorDiedError as exc:
                self._lost = self._where(_reason(exc))
                return
            except LOST_ERRORS:
                continue  # unavailable for now: the lease outlives a few missed renewals
            if not alive:
                self._lost = self._where("its actor stopped")
                return

    # -- predictions ---------------------------------------------------------------------------

    async def predict(
        self, inputs: dict[str, Any], prediction_id: str, context: dict[str, str] | None = None
    ) -> AsyncIterator[Event]:
        """Its events: the actor's first reply (a plain call, `run`: all of them for a quick
        prediction), then, when it was still running, the rest as a stream (`follow`)."""
        actor = self._actor
        if actor is None:
            raise RuntimeError("start() the instance before predicting")
        if self._lost is not None:
            raise InstanceLost(self._lost)
        started = finished = False
        try:
            first, more = await actor.run.remote(inputs, prediction_id, context)
            if first == STOPPING:
                self._lost = self._where("its actor was stopping")
                raise InstanceLost(self._lost)
            for event in first:
                started = started or isinstance(event, Started)
                finished = isinstance(event, Done)
                yield event
            if more:
                stream = actor.follow.options(num_returns="streaming").remote(prediction_id)
                async for batch in _values(stream):
                    for event in batch:
                        finished = isinstance(event, Done)
                        yield event
        except LOST_ERRORS as exc:
            self._lost = self._where(_reason(exc))
            finished = True
            if not started:
                if not isinstance(exc, ActorDiedError):  # it may be there: it must not run twice
                    _fire(actor.cancel.remote(prediction_id))
                raise InstanceLost(self._lost) from exc
            yield Done("failed", error=LOST_ERROR.format(self._lost))
        finally:
            if not finished:  # the caller went away: the prediction must not go on there
                _fire(actor.cancel.remote(prediction_id))

    async def cancel(self, prediction_id: str) -> bool:
        if self._actor is None or self._lost is not None:
            return False
        try:
            return bool(await self._actor.cancel.remote(prediction_id))
        except LOST_ERRORS:
            return False

    async def health(self) -> Health:
        """The actor's worker's health; a lost machine is DEFUNCT, with why."""
        if self._lost is not None:
            return Health(RunnerState.DEFUNCT, self._lost)
        if self._actor is None:
            return Health(RunnerState.STOPPED)
        try:
            status, error = await self._actor.health.remote()
        except LOST_ERRORS as exc:
            return Health(RunnerState.DEFUNCT, self._where(_reason(exc)))
        return Health(status, error)

    async def stop(self) -> None:
        """Let go of the actor: it exits unless another replica holds it or it runs something."""
        if self._renewer is not None:
            self._renewer.cancel()
        self._backend.free(self._base, self._index)
        actor, self._actor = self._actor, None
        if actor is not None and self._lost is None:
            try:
                await actor.release.remote(self.holder)
            except LOST_ERRORS:
                pass

    async def where(self) -> dict[str, Any]:
        """The actor's own account of where it runs (node, PIDs, GPUs, holders)."""
        return dict(await self._actor.where.remote())

    def _where(self, reason: str) -> str:
        return f"Ray node {self.node_ip or '?'}: {reason}"


class RayBackend:
    """Instances as Ray actors on the cluster at `settings.ray_address` (joined here)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node_config = NodeConfig(
            storage_url=_node_storage(settings),
            public_url=settings.public_url,
            allow_private_urls=settings.allow_private_urls,
        )
        self._joined = False
        if not ray.is_initialized():
            ray.init(
                address=settings.ray_address or "auto",
                namespace=NAMESPACE,
                log_to_driver=False,  # the actors' output is theirs; what matters is streamed
            )
            self._joined = True
        self.actor_class = ray.remote(ModelActor)  # once: Ray exports the class per call
        self._taken: dict[str, set[int]] = {}  # actor name base -> indices held here
        self._totals_cache: dict[str, float] = {}
        self._totals_at = -TOTALS_FOR

    def instance(self, spec: InstanceSpec) -> RayInstance:
        base = f"{spec.version_id}:{spec.mode}:{spec.pool}:{spec.hardware.sku}"
        taken = self._taken.setdefault(base, set())
        index = next(i for i in range(len(taken) + 1) if i not in taken)
        taken.add(index)
        return RayInstance(self, spec, base, index)

    def free(self, base: str, index: int) -> None:
        self._taken.get(base, set()).discard(index)

    def can_place(self, hardware: Hardware) -> bool:
        """Whether the cluster's nodes together offer what one instance of the SKU asks for
        (whether one node does alone, or is free now, placement finds out)."""
        totals = self._totals()
        return all(totals.get(name, 0.0) >= amount for name, amount in needs(hardware).items())

    def _totals(self) -> dict[str, float]:
        """The cluster's resources, asked of the GCS at most every `TOTALS_FOR` seconds: the
        hardware list asks for every SKU at once."""
        now = time.monotonic()
        if now - self._totals_at > TOTALS_FOR:
            self._totals_cache = dict(ray.cluster_resources())
            self._totals_at = now
        return self._totals_cache

    async def close(self) -> None:
        """Leave the cluster (the actors stay: other replicas may hold them)."""
        if self._joined:
            await asyncio.to_thread(ray.shutdown)
            self._joined = False


def _node_storage(settings: Settings) -> str:
    """Where every node reads packages and writes outputs: S3 on a real cluster; this server's
    blob folder works when the nodes share it (one machine, NFS), as an absolute path (an
    actor's working folder is not the server's)."""
    url = settings.storage_url
    if url is not None and "://" in url:
        return url
    return str(Path(url or settings.blob_dir).expanduser().resolve())


_fired: set[asyncio.Task[None]] = set()  # referenced until they end


def _fire(ref: Any) -> None:
    """Wait for a call nobody awaits (a cancel on the way out), so that its failure is not
    reported by Ray as an unhandled error."""

    async def settle() -> None:
        with contextlib.suppress(Exception):
            await ref

    with contextlib.suppress(RuntimeError):  # no loop any more: nothing to wait with
        task = asyncio.ensure_future(settle())
        _fired.add(task)
        task.add_done_callback(_fired.discard)


async def _values(stream: Any) -> AsyncIterator[Any]:
    async for ref in stream:
        yield await ref


def _kill(actor: Any) -> None:
    with contextlib.suppress(Exception):  # already gone is what we want
        ray.kill(actor, no_restart=True)


def _reason(exc: BaseException) -> str:
    """One line for why an actor went away, from Ray's error (its death cause when it has one)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "died because" in line or "node" in line.lower() and "dead" in line.lower():
            return line.rstrip(".")
    return (lines[0] if lines else type(exc).__name__).rstrip(".")
