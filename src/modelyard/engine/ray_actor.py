"""The Ray actor that is one instance of a version, on whichever node Ray placed it.

It does on its node what `LocalInstance` does on the server: opens the blob store, unpacks the
package, builds or reuses the environment (cached on the node), starts the worker
(`runtime.LocalModel`) and runs predictions. Nothing of the server's disk is used: package,
weights and file inputs come from the blob store and the API's delivery URLs.

Replies are few and batched, because a Ray stream costs about 2 ms and each item 0.4 ms more,
where a plain call costs 1 ms. `boot` streams `("placed", node id, node ip)` at once (the proof
of placement the backend waits for), `("log", text)` for build and setup output, then `("ready",
slots)` or `("failed", error)`. A prediction is a plain call, `run`, answered with all its events
when it ends within `FIRST_REPLY_WITHIN` of Started (most predictions of small models), else with
those so far, and `follow` streams the rest: lists of events, each what had arrived since the last.
File outputs are uploaded here and travel as `files.StoredFile` markers (recorded, not copied).

Its life (ray_backend.py has the rules from the replicas' side): each replica holding it renews a
lease (`hold`); a boot or a prediction (running, or waiting inside the runner for one of the
worker's slots) is work. With no work and no live lease it stops its worker and kills itself,
freeing its name and resources: at once when the last holder `release`d it, else once idle for
`idle_timeout` (its holders died: scale to zero still happens). While it exits, `boot` and `run`
answer `STOPPING`, and the replica attaches anew.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import ray

from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.runtime.events import Done, Event, Output, OutputFile
from modelyard.runtime.home import modelyard_home
from modelyard.runtime.local import LocalModel
from modelyard.store.blobs import BlobStore, open_blob_store

from .backend import InstanceSpec
from .files import StoredFile
from .local_backend import limits_of
from .netguard import PublicOnlyTransport
from .packages import unpacked

STOPPING = "stopping"  # what `boot` and `run` answer while the actor exits
FIRST_REPLY_WITHIN = 0.02  # seconds after Started that `run` waits for the end before replying
FOLLOW_WITHIN = 60.0  # seconds a prediction left by `run` waits for its `follow`
CHECK_EVERY = 1.0  # seconds between the actor's looks at its leases and idleness

BootItem = tuple[Any, ...]


@dataclass(frozen=True)
class NodeConfig:
    """What an actor needs of the server's settings, on any node."""

    storage_url: str  # the blob store every node reaches (S3, or a folder they all share)
    public_url: str  # the API: file inputs are its delivery URLs
    allow_private_urls: bool  # whether file inputs may be on private addresses


def node_dir(name: str) -> Path:
    """A folder of this node's own, under `$MODELYARD_HOME/ray` (packages, the blob cache)."""
    return modelyard_home() / "ray" / name


class ModelActor:
    """One instance: its worker, its boot and the predictions it runs (see the module doc)."""

    def __init__(
        self, spec: InstanceSpec, config: NodeConfig, holder: str, lease_ttl: float
    ) -> None:
        self.spec = spec
        self.config = config
        self._loop = asyncio.get_running_loop()  # an async actor's: it runs `__init__` too
        self._loop_thread = threading.get_ident()
        self._leases: dict[str, float] = {holder: time.monotonic() + lease_ttl}
        self._work = 0  # boots and predictions in progress (waiting for a slot counts)
        self._last_active = time.monotonic()
        self._released = False  # the last holder let go: exit as soon as no work is left
        self._exiting = False
        self._model: LocalModel | None = None
        self._http: httpx.AsyncClient | None = None
        self._blobs: BlobStore | None = None
        self._boot_task: asyncio.Task[int] | None = None
        self._boot_log: list[str] = []
        self._running: dict[str, _Running] = {}  # prediction id -> its events
        self._boot_changed = asyncio.Event()  # replaced on every change (see `_boot_line`)
        self._watcher = self._loop.create_task(self._watch())

    # -- boot ----------------------------------------------------------------------------------

    async def boot(self, holder: str, lease_ttl: float) -> AsyncIterator[BootItem]:
        """Start the instance (once, whoever asks first) and stream its progress: the first
        item says where it runs; every caller sees the whole log, also one who comes late."""
        context = ray.get_runtime_context()
        yield ("placed", context.get_node_id(), ray.util.get_node_ip_address())
        if self._exiting:
            yield (STOPPING,)
            return
        self.hold(holder, lease_ttl)
        if self._boot_task is None:
            self._boot_task = asyncio.ensure_future(self._boot())
            self._boot_task.add_done_callback(lambda _: self._boot_changed_now())
        seen = 0
        while True:
            changed = self._boot_changed  # taken before looking: a later change sets it
            if seen < len(self._boot_log):
                text, seen = "".join(self._boot_log[seen:]), len(self._boot_log)
                yield ("log", text)
            if self._boot_task.done():
                break
            await changed.wait()
        error = self._boot_task.exception()
        if error is not None:
            yield ("failed", str(error) or type(error).__name__)
        else:
            yield ("ready", self._boot_task.result())

    async def _boot(self) -> int:
        """Blobs, package, weights, environment, worker, `setup()`: the slots it reported."""
        self._work += 1
        try:
            blobs = self._blobs = await asyncio.to_thread(
                open_blob_store, self.config.storage_url, node_dir("blobs")
            )
            package_dir = await asyncio.to_thread(
                unpacked, blobs, node_dir("packages"), self.spec.package_key
            )
            weights = None
            if self.spec.weights_key is not None:  # from the store (S3: downloaded, cached)
                weights = str(await asyncio.to_thread(blobs.path, self.spec.weights_key))
            self._http = _http_client(self.config)
            self._model = LocalModel(
                package_dir,
                mode=self.spec.mode,
                builder=EnvironmentBuilder(),
                weights=weights,
                setup_timeout=self.spec.setup_timeout,
                http_client=self._http,
                schema=self.spec.schema,
                collect_stream=False,  # the engine's event log keeps a stream's items
                # Ray chose the GPUs of this actor; the worker sees those and no other (none
                # for a CPU SKU), whatever cog.yaml's `environment` says.
                worker_environment={"CUDA_VISIBLE_DEVICES": _gpu_ids()},
                limits=limits_of(self.spec.hardware),
                sandbox=None,  # where this node has bubblewrap
            )
            result = await self._model.start(self._progress)
            if result.status != "succeeded":
                raise RuntimeError(result.error or "setup failed")
            assert self._model.runner is not None
            return max(1, self._model.runner.slots)
        finally:
            self._work -= 1
            self._last_active = time.monotonic()

    def _progress(self, text: str) -> None:
        """Build output comes from a thread, setup logs from the loop: both reach `boot`."""
        line = text if text.endswith("\n") else text + "\n"
        if threading.get_ident() == self._loop_thread:
            self._boot_line(line)
        else:
            self._loop.call_soon_threadsafe(self._boot_line, line)

    def _boot_line(self, line: str) -> None:
        self._boot_log.append(line)
        self._boot_changed_now()

    def _boot_changed_now(self) -> None:
        """A line, or the end of the boot: wake every `boot` stream (each takes the new event
        before it looks, so nothing between its look and its wait is missed)."""
        changed, self._boot_changed = self._boot_changed, asyncio.Event()
        changed.set()

    # -- predictions ---------------------------------------------------------------------------

    async def run(
        self, inputs: dict[str, Any], prediction_id: str, context: dict[str, str] | None = None
    ) -> tuple[Any, bool]:
        """Start one prediction and answer with its first events: all of them (ending with
        Done) when it ends within `FIRST_REPLY_WITHIN` seconds of Started, and `more` False;
        else those so far, `more` True, and the rest comes from `follow`. `STOPPING` instead of
        events when this actor is on its way out (the replica runs the prediction elsewhere).

        Why not a stream from the start: a Ray stream costs about 2 ms, a plain call 1 ms, and
        most predictions of small models end within milliseconds."""
        model = self._model
        if self._exiting or model is None:
            return STOPPING, False
        if prediction_id in self._running:
            return [Done("failed", error=f"{prediction_id} already runs here")], False
        self._work += 1
        running = self._running[prediction_id] = _Running(
            model.predict(inputs, prediction_id=prediction_id, context=context)
        )
        events: list[Event] = []
        ended = True  # unless it goes on past the first reply (or this call fails)
        try:
            deadline: float | None = None  # set once Started is here
            while True:
                timeout = None if deadline is None else deadline - self._loop.time()
                batch = await running.take(timeout)
                if batch is None:  # still running: the rest streams through `follow`
                    ended = False
                    break
                events += batch
                if isinstance(events[-1], Done):
                    break
                deadline = deadline or self._loop.time() + FIRST_REPLY_WITHIN
            events = await self._uploaded(events)
        finally:
            if ended:
                self._end(prediction_id)
            else:  # a replica that died between the two calls must not leave it running
                running.abandon = self._loop.call_later(FOLLOW_WITHIN, self._end, prediction_id)
        return events, not ended

    async def follow(self, prediction_id: str) -> AsyncIterator[list[Event]]:
        """The rest of a prediction that `run` left running: lists of events, each what had
        arrived by the time the last one was sent, the last one ending with Done."""
        running = self._running.get(prediction_id)
        if running is None:
            yield [Done("failed", error="the prediction is no longer on its instance")]
            return
        if running.abandon is not None:
            running.abandon.cancel()
        try:
            while True:
                batch = await running.take(None)
                assert batch is not None  # no timeout: it waits for one
                yield await self._uploaded(batch)
                if isinstance(batch[-1], Done):
                    return
        finally:
            self._end(prediction_id)  # before Done: the caller went away, the runner cancels

    def _end(self, prediction_id: str) -> None:
        running = self._running.pop(prediction_id, None)
        if running is None:
            return
        running.close()
        self._work -= 1
        self._last_active = time.monotonic()

    async def _uploaded(self, events: list[Event]) -> list[Event]:
        """`events` with their OutputFiles uploaded and replaced by StoredFile markers."""
        if not any(_has_files(_payload(event)) for event in events):
            return events  # most events: no copy, no await
        result: list[Event] = []
        for event in events:
            if isinstance(event, Output):
                event = replace(event, value=await self._stored(event.value))
            elif isinstance(event, Done):
                event = replace(event, output=await self._stored(event.output))
            result.append(event)
        return result

    async def _stored(self, value: Any) -> Any:
        if isinstance(value, OutputFile):
            assert self._blobs is not None
            blob = await asyncio.to_thread(self._blobs.put_file, value.path)
            return StoredFile(blob.key, value.path.name, blob.size, blob.md5)
        if isinstance(value, list):
            return [await self._stored(item) for item in value]
        if isinstance(value, dict):
            return {key: await self._stored(item) for key, item in value.items()}
        return value

    async def cancel(self, prediction_id: str) -> bool:
        """Cancel a running or waiting prediction; False when it is not here."""
        return self._model is not None and await self._model.cancel(prediction_id)

    async def health(self) -> tuple[str, str | None]:
        """Cog's health status of its worker, and why when not healthy (`Runner.health`)."""
        runner = None if self._model is None else self._model.runner
        if runner is None or self._exiting:
            return "STOPPED", None
        health = await runner.health()
        return str(health.status), health.error

    # -- leases and the end --------------------------------------------------------------------

    def hold(self, holder: str, lease_ttl: float) -> bool:
        """`holder` keeps this actor for `lease_ttl` more seconds; False when it is exiting."""
        if self._exiting:
            return False
        self._leases[holder] = time.monotonic() + lease_ttl
        self._released = False
        return True

    def release(self, holder: str) -> None:
        """`holder` lets go; the last one to do so makes it exit as soon as no work is left."""
        self._leases.pop(holder, None)
        if not self._live_leases() and not self._exiting:
            self._released = True
            self._watcher.cancel()  # look now, not in a second
            self._watcher = self._loop.create_task(self._watch())

    def where(self) -> dict[str, Any]:
        """Where it runs and what it holds (for tests and for people)."""
        runner = None if self._model is None else self._model.runner
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "gpus": _gpu_ids(),
            "worker_pid": None if runner is None else runner.pid,
            "holders": sorted(self._leases),
        }

    def _live_leases(self) -> bool:
        now = time.monotonic()
        self._leases = {holder: until for holder, until in self._leases.items() if until > now}
        return bool(self._leases)

    def _should_exit(self) -> bool:
        if self._work or self._live_leases():
            return False
        return self._released or time.monotonic() - self._last_active >= self.spec.idle_timeout

    async def _watch(self) -> None:
        while not self._should_exit():
            await asyncio.sleep(CHECK_EVERY)
        self._exiting = True
        try:
            if self._model is not None:
                await self._model.stop()  # the worker exits (and frees its GPU memory) first
                await self._model.discard_outputs()  # uploaded as they came (`_uploaded`)
            if self._http is not None:
                await self._http.aclose()
        finally:
            # Killing itself through Ray frees its name and resources at once; an exit of the
            # process would look like a lost machine to whoever calls it next.
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


class _Running:
    """A prediction on this actor: its runner's events, queued as they come (by `_pump`), so
    that each reply takes all that arrived meanwhile."""

    def __init__(self, stream: AsyncIterator[Event]) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.pump = asyncio.ensure_future(_pump(stream, self.queue))
        self.abandon: asyncio.TimerHandle | None = None

    async def take(self, timeout: float | None) -> list[Event] | None:
        """The events queued, after waiting up to `timeout` (None: for ever) for one; None
        when none came in time."""
        if self.queue.empty():
            try:
                first = await asyncio.wait_for(self.queue.get(), timeout)
            except TimeoutError:
                return None
        else:
            first = self.queue.get_nowait()
        batch = [first]
        while not self.queue.empty():
            batch.append(self.queue.get_nowait())
        return batch

    def close(self) -> None:
        if self.abandon is not None:
            self.abandon.cancel()
        if not self.pump.done():  # nobody listens any more: the runner cancels the prediction
            self.pump.cancel()


async def _pump(stream: AsyncIterator[Event], queue: asyncio.Queue[Event]) -> None:
    """The runner's events into `queue`, so that one reply can carry several."""
    last: Event | None = None
    try:
        async for last in stream:
            queue.put_nowait(last)
    except Exception as exc:  # noqa: BLE001 - a bug below us: the prediction ends, saying so
        last = Done("failed", error=f"internal error on the instance: {exc}")
        queue.put_nowait(last)
    if not isinstance(last, Done):  # the replies wait for a Done: there always is one
        queue.put_nowait(Done("failed", error="the prediction ended early"))


def _payload(event: Event) -> Any:
    """What of an event may hold files: an output item, or the final output."""
    if isinstance(event, Output):
        return event.value
    return event.output if isinstance(event, Done) else None


def _has_files(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_files(item) for item in value)
    if isinstance(value, dict):
        return any(_has_files(item) for item in value.values())
    return isinstance(value, OutputFile)


def _gpu_ids() -> str:
    return ",".join(str(gpu) for gpu in ray.get_gpu_ids())


def _http_client(config: NodeConfig) -> httpx.AsyncClient:
    """Fetches file inputs: the API's delivery URLs always (the API may sit on a private
    network), other URLs as the server's `allow_private_urls` says."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(60.0, connect=10.0),
        follow_redirects=True,
        mounts={config.public_url: httpx.AsyncHTTPTransport()},
        transport=None if config.allow_private_urls else PublicOnlyTransport(),
    )
