"""The Ray backend on a real two-node Ray cluster on this machine (support/raycluster.py): a head
on 127.0.0.2 with CPUs, a worker node on 127.0.0.3 that also offers one (declared) GPU and the
`gpu-t4` SKU's resource. This process is the driver, as an API replica is; instances are the
backend's own (`RayBackend.instance`), driven directly or by a real `Pool`, on small real Cog
packages (tests/e2e/packages) whose environment is built once and shared by both nodes.

What holds: a CPU prediction runs in an actor and streams its events; a file output comes back
as a `StoredFile` in the blob store; replicas share a named actor, whose slots bound what runs
(a waiting prediction can be canceled) and which stays while any holds it; an actor nobody holds
stops by itself; a GPU SKU lands on the GPU node and a second instance waits, saying so, until
the first scales down; a lost node fails the running prediction within seconds with the
machine-lost error, puts a prediction that had not started back in the queue, and the pool's
instance comes back once the node does; an SKU no node offers fails after `placement_timeout`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelyard.runtime.sandbox import SHARED_ENV

pytest.importorskip("ray")

import ray
from support.raycluster import RayCluster, ray_cluster

from modelyard.billing.hardware import CPU, HardwareTable
from modelyard.cogspec.config import load_config
from modelyard.cogspec.inputs import validate_input
from modelyard.cogspec.schema import predictor_schema
from modelyard.engine import ray_backend
from modelyard.engine.backend import BootFailed, InstanceSpec
from modelyard.engine.files import StoredFile
from modelyard.engine.jobs import Job, PoolKey
from modelyard.engine.pools import Pool, PoolPolicy
from modelyard.engine.ray_backend import NAMESPACE, RayBackend, RayInstance
from modelyard.runtime.events import Done, Event, Log, Output, Started
from modelyard.runtime.package import pack_package
from modelyard.settings import Settings
from modelyard.store.blobs import BlobStore

pytestmark = pytest.mark.asyncio(loop_scope="session")

PACKAGES = Path(__file__).parents[1] / "e2e" / "packages"
T4 = HardwareTable().get("gpu-t4")
H100 = HardwareTable().get("gpu-h100")
LOST = "The machine running this prediction was lost ("


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    # The actors' sandboxed workers see the tests' folders, where the gate files are.
    shared = {SHARED_ENV: str(tmp_path_factory.getbasetemp())}
    with ray_cluster(env=shared) as started:
        started.connect()
        yield started


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"  # its blob folder is the cluster's store, as S3 is in production


@pytest.fixture
def backend(cluster: RayCluster, data: Path) -> RayBackend:
    return RayBackend(Settings(data_dir=data, placement_timeout=60))


@pytest.fixture
def quick_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Placement waits reported every half second, not every ten."""
    monkeypatch.setattr(ray_backend, "FIRST_WAIT_REPORT", 0.3)
    monkeypatch.setattr(ray_backend, "WAIT_REPORT_EVERY", 0.5)


def spec(data: Path, package: str, tag: str = "", **fields: Any) -> InstanceSpec:
    """A version of tests/e2e/packages/`package` stored in `data`'s blob folder, as a push does;
    `tag` makes it another version (another actor name) of the same package."""
    folder = PACKAGES / package
    key = BlobStore(data / "blobs").put_bytes(pack_package(folder).data).key
    schema = predictor_schema(folder, load_config(folder))
    # `package_dir` is not used by an actor: it unpacks the package on its node.
    return InstanceSpec(f"{package}{tag}-{key[:8]}", key, folder, "predict", schema, **fields)


def inputs(instance: RayInstance, **payload: Any) -> dict[str, Any]:
    return validate_input(instance.spec.schema, payload, instance.spec.component)


async def started(backend: RayBackend, spec: InstanceSpec, log: list[str] | None = None) -> Any:
    instance = backend.instance(spec)
    await instance.start((log if log is not None else []).append)
    return instance


async def run(instance: RayInstance, prediction_id: str, **payload: Any) -> list[Event]:
    return await collect(instance, prediction_id, [], **payload)


async def collect(
    instance: RayInstance, prediction_id: str, sink: list[Event], **payload: Any
) -> list[Event]:
    """Run a prediction, appending its events to `sink` as they come (a test watches it)."""
    async for event in instance.predict(inputs(instance, **payload), prediction_id):
        sink.append(event)
    return sink


def has_started(events: list[Event]) -> bool:
    return any(isinstance(e, Started) for e in events)


async def eventually(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def actor_exists(name: str) -> bool:
    try:
        ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return False
    return True


# -- predictions -------------------------------------------------------------------------------


async def test_a_cpu_prediction_runs_in_an_actor_and_streams_its_events(
    backend: RayBackend, data: Path, cluster: RayCluster
) -> None:
    log: list[str] = []
    ticker = await started(backend, spec(data, "ticker"), log)
    try:
        assert ticker.node_id in {cluster.node_id("127.0.0.2"), cluster.node_id("127.0.0.3")}
        assert any("environment" in line.lower() for line in log), log  # boot progress came
        where = await ticker.where()
        assert where["pid"] != os.getpid() and where["worker_pid"] is not None
        assert where["gpus"] == ""  # a CPU SKU sees no GPU

        events = await run(ticker, "tick-1", n=3)
        assert isinstance(events[0], Started) and isinstance(events[-1], Done)
        assert [e.text for e in events if isinstance(e, Log)] == ["log 0\n", "log 1\n", "log 2\n"]
        assert [e.value for e in events if isinstance(e, Output)] == ["tick 0", "tick 1", "tick 2"]
        assert events[-1].status == "succeeded" and events[-1].is_stream

        # Longer than the first reply waits: the rest arrives as a stream, in order.
        slow = await started(backend, spec(data, "slow"))
        try:
            events = await run(slow, "slow-1", tag="s", seconds=0.3)
            texts = [e.text for e in events if isinstance(e, Log)]
            assert texts == ["start s\n", "end s\n"]
            assert (events[-1].status, events[-1].output) == ("succeeded", "s")
        finally:
            await slow.stop()
    finally:
        await ticker.stop()


async def test_a_file_output_comes_back_as_a_stored_file(backend: RayBackend, data: Path) -> None:
    bigfile = await started(backend, spec(data, "bigfile"))
    try:
        events = await run(bigfile, "file-1", megabytes=1)
    finally:
        await bigfile.stop()
    done = events[-1]
    assert isinstance(done, Done) and done.status == "succeeded", done
    stored = done.output
    assert isinstance(stored, StoredFile)
    assert (stored.name, stored.size) == ("big.bin", 1 << 20)
    content = BlobStore(data / "blobs").read_bytes(stored.key)  # uploaded by the actor
    assert content[:4] == b"head" and content[-4:] == b"tail"


# -- sharing and the actors' life --------------------------------------------------------------


async def test_replicas_share_an_actor_whose_slots_bound_what_runs(
    cluster: RayCluster, data: Path, tmp_path: Path
) -> None:
    """Two replicas (two backends) get the same actor for the same pool slot; a prediction
    from the second waits inside it while the first's runs, and a cancel ends it; the actor
    stays while either holds it and goes when the last lets go."""
    version = spec(data, "slow", "-shared")
    one = RayBackend(Settings(data_dir=data))
    two = RayBackend(Settings(data_dir=data))
    first, second = await started(one, version), await started(two, version)
    assert first.name == second.name
    assert (await first.where())["pid"] == (await second.where())["pid"]
    assert len((await first.where())["holders"]) == 2

    gate = tmp_path / "gate"
    a: list[Event] = []
    running = asyncio.ensure_future(collect(first, "shared-a", a, tag="a", gate=str(gate)))
    await eventually(lambda: has_started(a), "the first prediction to start")  # the only slot
    b: list[Event] = []
    waiting = asyncio.ensure_future(collect(second, "shared-b", b, tag="b"))
    await asyncio.sleep(1.0)
    assert not b and not waiting.done()  # it waits for the slot, inside the actor
    assert await second.cancel("shared-b")
    await asyncio.wait_for(waiting, 10)
    assert [type(e) for e in b] == [Done] and b[0].status == "canceled"  # it never started
    gate.touch()
    events = await asyncio.wait_for(running, 10)
    assert (events[-1].status, events[-1].output) == ("succeeded", "a")

    await first.stop()
    events = await run(second, "shared-c", tag="c")  # still there for the other holder
    assert events[-1].status == "succeeded"
    await second.stop()
    await eventually(lambda: not actor_exists(second.name), "the unheld actor to exit", 10)


async def test_an_actor_nobody_holds_stops_itself_once_idle(
    cluster: RayCluster, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replica that made it died (its lease is never renewed nor released): the actor
    exits after its lease lapses and `idle_timeout` passes, and frees its resources."""
    monkeypatch.setattr(ray_backend, "LEASE_TTL", 1.0)
    backend = RayBackend(Settings(data_dir=data))
    orphan = await started(backend, spec(data, "noop", "-orphan", idle_timeout=1.0))
    assert orphan._renewer is not None
    orphan._renewer.cancel()  # as if its replica died: no renewal, no release
    assert actor_exists(orphan.name)
    await eventually(lambda: not actor_exists(orphan.name), "the orphan to exit", 15)


# -- GPUs, placement ---------------------------------------------------------------------------


async def test_a_gpu_sku_lands_on_the_gpu_node_and_a_second_instance_waits_for_it(
    backend: RayBackend, data: Path, cluster: RayCluster, quick_reports: None
) -> None:
    assert T4 is not None
    first = await started(backend, spec(data, "noop", "-gpu1", hardware=T4))
    assert first.node_id == cluster.node_id("127.0.0.3")
    assert (await first.where())["gpus"] == "0"  # Ray's GPU, handed to the worker

    log: list[str] = []
    second = backend.instance(spec(data, "noop", "-gpu2", hardware=T4))
    booting = asyncio.ensure_future(second.start(log.append))
    waiting = await eventually(
        lambda: next((line for line in log if line.startswith("Waiting")), None), "a wait"
    )
    assert "gpu-t4 (GPU: 1, sku-gpu-t4: 1)" in waiting, waiting
    assert "every node offering it is busy" in waiting, waiting
    assert not booting.done()

    assert (await run(first, "gpu-1"))[-1].status == "succeeded"
    await first.stop()  # the pool scales it down: its actor exits, the GPU is free
    assert await asyncio.wait_for(booting, 30) == 1
    assert second.node_id == cluster.node_id("127.0.0.3")
    assert (await run(second, "gpu-2"))[-1].status == "succeeded"
    await second.stop()


async def test_an_sku_no_node_offers_fails_after_the_placement_timeout(
    cluster: RayCluster, data: Path, quick_reports: None
) -> None:
    assert H100 is not None and T4 is not None
    backend = RayBackend(Settings(data_dir=data, placement_timeout=2.0))
    assert backend.can_place(CPU) and backend.can_place(T4)
    assert not backend.can_place(H100)
    log: list[str] = []
    instance = backend.instance(spec(data, "noop", "-h100", hardware=H100))
    began = time.monotonic()
    with pytest.raises(BootFailed) as failure:
        await instance.start(log.append)
    assert 2.0 <= time.monotonic() - began < 10
    message = str(failure.value)
    assert "gpu-h100 (GPU: 1, sku-gpu-h100: 1) within 2 s" in message, message
    assert "no node of the Ray cluster offers it" in message, message
    assert any("Waiting for a Ray node for gpu-h100" in line for line in log), log
    await instance.stop()
    await eventually(lambda: not actor_exists(instance.name), "the pending actor to go", 10)


# -- lost machines -----------------------------------------------------------------------------


class PoolRun:
    """A real `Pool` over the backend, with the engine's part played small: each job's events
    are recorded, and `InstanceLost` goes to the pool as the engine lets it."""

    def __init__(self, backend: RayBackend, spec: InstanceSpec) -> None:
        self.events: dict[str, list[Event]] = {}
        self.runs: list[str] = []  # prediction ids, each time one is sent to an instance
        self.boot_log: list[str] = []
        self.boot_errors: dict[str, str] = {}
        self.pool = Pool(
            name="lost",
            policy=PoolPolicy(max_instances=1, idle_timeout=300),
            make_instance=self._make,
            run=self._run,
            boot_log=lambda _, text: self.boot_log.append(text),
            boot_failed=lambda job, error: self.boot_errors.__setitem__(job.prediction_id, error),
        )
        self.backend, self.spec = backend, spec

    async def _make(self) -> RayInstance:
        return self.backend.instance(self.spec)

    async def _run(self, instance: Any, job: Job) -> None:
        self.runs.append(job.prediction_id)
        async for event in instance.predict(job.inputs or {}, job.prediction_id):
            self.events.setdefault(job.prediction_id, []).append(event)

    def submit(self, prediction_id: str, **payload: Any) -> None:
        values = validate_input(self.spec.schema, payload, self.spec.component)
        self.pool.put(Job(prediction_id, PoolKey(1, "predict"), values))

    def done(self, prediction_id: str) -> Done | None:
        events = self.events.get(prediction_id, [])
        return events[-1] if events and isinstance(events[-1], Done) else None


async def test_a_lost_node_fails_what_ran_requeues_what_had_not_and_comes_back(
    cluster: RayCluster, data: Path, quick_reports: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert T4 is not None
    # An idle instance learns of its lost actor from its lease renewal too: not in this test,
    # whose third part needs a prediction to be the first to find the actor dead.
    monkeypatch.setattr(ray_backend, "LEASE_RENEW", 3600.0)
    backend = RayBackend(Settings(data_dir=data, placement_timeout=120))
    pool = PoolRun(backend, spec(data, "slow", "-lost", hardware=T4))
    pool.pool.start()
    try:
        # 1. A running prediction: the node dies under it.
        pool.submit("lost-1", tag="one", seconds=60)
        await eventually(
            lambda: has_started(pool.events.get("lost-1", [])), "the first to start", 60
        )
        member = pool.pool.members[0]
        assert member.instance is not None and member.instance.node_id == cluster.node_id(
            "127.0.0.3"
        )
        cluster.kill_worker_raylet()
        killed = time.monotonic()
        done = await eventually(lambda: pool.done("lost-1"), "the running prediction to fail")
        took = time.monotonic() - killed
        assert done.status == "failed" and done.error is not None, done
        assert done.error.startswith(LOST) and done.error.endswith("). Run it again."), done
        assert "127.0.0.3" in done.error
        print(f"\nthe lost node failed the running prediction in {took:.2f} s: {done.error}")
        await eventually(lambda: not pool.pool.members, "the lost instance to leave the pool")

        # 2. The next prediction boots a replacement, which waits for a node offering gpu-t4.
        pool.submit("lost-2", tag="two")
        await eventually(
            lambda: any("no node of the Ray cluster offers it" in t for t in pool.boot_log),
            "the replacement to wait",
        )
        cluster.restart_worker()
        done = await eventually(lambda: pool.done("lost-2"), "the second prediction", 90)
        assert (done.status, done.output) == ("succeeded", "two")
        node = cluster.node_id("127.0.0.3")
        assert pool.pool.members[0].instance.node_id == node  # type: ignore[union-attr]

        # 3. The node dies while the instance is idle: the next prediction reaches a dead actor
        # before it starts, goes back to the front of the queue and runs on a replacement.
        cluster.kill_worker_raylet()
        await eventually(lambda: not gpu_node_alive(), "the node to be declared dead")
        mark = len(pool.boot_log)
        pool.submit("lost-3", tag="three")
        pool.submit("lost-4", tag="four")
        await eventually(
            lambda: any("no node of the Ray cluster offers it" in t for t in pool.boot_log[mark:]),
            "the replacement to wait",
        )
        assert pool.runs == ["lost-1", "lost-2", "lost-3"] and "lost-3" not in pool.events
        cluster.restart_worker()
        done = await eventually(lambda: pool.done("lost-3"), "the requeued prediction", 90)
        assert (done.status, done.output) == ("succeeded", "three"), done
        assert pool.runs.count("lost-3") == 2  # once on the dead actor, then on its replacement
        assert not pool.boot_errors
        done = await eventually(lambda: pool.done("lost-4"), "the one behind it", 30)
        assert done.status == "succeeded"
        assert pool.runs[-3:] == ["lost-3", "lost-3", "lost-4"]  # it kept its place
    finally:
        await pool.pool.close()
        if cluster.worker.pid_of("raylet") is None:
            cluster.restart_worker()


def gpu_node_alive() -> bool:
    return any(n["Alive"] and n["NodeManagerAddress"] == "127.0.0.3" for n in ray.nodes())
