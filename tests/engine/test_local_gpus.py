"""GPUs on one machine, with real worker processes: the local backend gives each instance of a GPU
SKU GPUs of its own (`CUDA_VISIBLE_DEVICES`), a CPU instance none, and an instance that finds
every GPU held waits until one is freed (an idle instance scaled down).

The machine has no GPU: two fake T4s are declared (as `--gpus 0:t4,1:t4` does). The package
(tests/e2e/packages/gpu_echo) answers with the `CUDA_VISIBLE_DEVICES` its worker got, which is
all a GPU model would see of its placement. Instances are driven by the backend directly and by
the engine's `Pool` (queue, scale-up to `max_instances`, scale-down when idle), not through a
server, so the hardware SKU is set on the `InstanceSpec` by the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from modelyard.billing.hardware import CPU, Hardware
from modelyard.cogspec.config import load_config
from modelyard.cogspec.schema import predictor_schema
from modelyard.engine.backend import InstanceSpec
from modelyard.engine.gpus import Gpu, GpuInventory
from modelyard.engine.jobs import Job, PoolKey
from modelyard.engine.local_backend import LocalBackend
from modelyard.engine.pools import Pool, PoolPolicy
from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.runtime.events import Done, Event, Log
from modelyard.runtime.sandbox import SHARED_ENV

pytestmark = pytest.mark.asyncio(loop_scope="session")

PACKAGE = Path(__file__).parents[1] / "e2e" / "packages" / "gpu_echo"
T4 = Hardware("gpu-t4", "Nvidia T4 GPU", 0.000225, gpus=1, gpu_model="t4")
LIMIT = 120.0  # seconds any one step may take (the first boot builds the environment)


def spec(hardware: Hardware) -> InstanceSpec:
    return InstanceSpec(
        version_id="gpu-echo",
        package_key="gpu-echo",
        package_dir=PACKAGE,
        mode="predict",
        schema=predictor_schema(PACKAGE, load_config(PACKAGE)),
        hardware=hardware,
    )


@pytest_asyncio.fixture(loop_scope="session")
async def backend(
    env_builder: EnvironmentBuilder,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[LocalBackend]:
    # Sandboxed workers see the tests' folders, where the gate files are (serve --sandbox-share).
    monkeypatch.setenv(SHARED_ENV, str(tmp_path_factory.getbasetemp()))
    inventory = GpuInventory([Gpu("0", "t4"), Gpu("1", "t4")], placement_timeout=LIMIT)
    backend = LocalBackend(env_builder, httpx.AsyncClient(), inventory)
    try:
        yield backend
    finally:
        await backend.close()


async def predict(instance: Any, prediction_id: str, **inputs: Any) -> Done:
    async for event in instance.predict({"seconds": 0, "gate": "", **inputs}, prediction_id):
        if isinstance(event, Done):
            return event
    raise AssertionError("the prediction ended without Done")


def noop(*_: object) -> None:
    pass


async def test_each_instance_sees_only_its_own_gpus(backend: LocalBackend) -> None:
    assert backend.can_place(CPU) and backend.can_place(T4)
    assert not backend.can_place(Hardware("gpu-t4-4x", "4x T4", 1.0, gpus=4, gpu_model="t4"))
    first, second, cpu = (backend.instance(spec(hw)) for hw in (T4, T4, CPU))
    try:
        for instance in (first, second, cpu):
            assert await asyncio.wait_for(instance.start(noop), LIMIT) == 1
            assert instance.lost is False
        seen = [(await predict(i, f"p{n}")).output for n, i in enumerate((first, second, cpu))]
        assert seen == ["0", "1", ""]  # a CPU instance sees no GPU at all

        third, said = backend.instance(spec(T4)), []
        booting = asyncio.create_task(third.start(said.append))
        await asyncio.sleep(0.3)
        assert not booting.done()
        assert said == ["waiting for a free T4 GPU: 2 of 2 in use by other instances"]
        await first.stop()  # scale-down frees its GPU, and the waiting instance takes it
        await asyncio.wait_for(booting, LIMIT)
        assert (await predict(third, "p3")).output == "0"
        assert said[1].startswith("got GPU 0 (T4) after waiting ")
        await third.stop()
    finally:
        for instance in (first, second, cpu):
            await instance.stop()
    assert backend.gpus.holders() == {}


async def test_a_failed_boot_gives_its_gpu_back(backend: LocalBackend, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "cog.yaml").write_text((PACKAGE / "cog.yaml").read_text())
    source = (PACKAGE / "predict.py").read_text()
    (broken / "predict.py").write_text(
        source.replace("class Predictor(BasePredictor):\n", "class Predictor(BasePredictor):\n"
                       "    def setup(self) -> None:\n        raise RuntimeError('no weights')\n\n")
    )  # fmt: skip
    instance = backend.instance(
        InstanceSpec("broken", "broken", broken, "predict", spec(T4).schema, hardware=T4)
    )
    with pytest.raises(Exception, match="no weights"):
        await asyncio.wait_for(instance.start(noop), LIMIT)
    assert backend.gpus.holders() == {}


async def test_the_third_instance_waits_for_a_gpu_and_runs_after_a_scale_down(
    backend: LocalBackend, tmp_path: Path
) -> None:
    """A pool of up to three instances on two GPUs: two predictions hold both GPUs; the third
    boots an instance that waits (its logs say for what) until an idle instance stops."""
    logs: dict[str, list[str]] = {}
    done: dict[str, Done] = {}
    failed: dict[str, str] = {}

    async def run(instance: Any, job: Job) -> None:
        assert job.inputs is not None
        async for event in instance.predict(job.inputs, job.prediction_id):
            note(job.prediction_id, event)

    def note(prediction_id: str, event: Event) -> None:
        if isinstance(event, Log):
            logs.setdefault(prediction_id, []).append(event.text)
        elif isinstance(event, Done):
            done[prediction_id] = event

    async def make_instance() -> Any:
        return backend.instance(spec(T4))

    pool = Pool(
        name="gpu-echo",
        policy=PoolPolicy(max_instances=3, idle_timeout=0.5),
        make_instance=make_instance,
        run=run,
        boot_log=lambda prediction_id, text: logs.setdefault(prediction_id, []).append(text),
        boot_failed=lambda job, error: failed.setdefault(job.prediction_id, error),
    )
    pool.start()
    gate = tmp_path / "gate"
    key = PoolKey(1, "predict")
    try:
        for name in ("one", "two"):
            pool.put(Job(name, key, {"seconds": 0, "gate": str(gate)}))
        await until(lambda: all(_said(logs, n, "CUDA_VISIBLE_DEVICES=") for n in ("one", "two")))

        pool.put(Job("three", key, {"seconds": 0, "gate": ""}))
        waiting = "waiting for a free T4 GPU: 2 of 2 in use by other instances\n"
        await until(lambda: waiting in logs.get("three", []))
        assert len(pool.members) == 3 and not done

        gate.touch()  # both finish; their instances idle, then scale down and free the GPUs
        await until(lambda: "three" in done)
        assert not failed
        assert {done["one"].output, done["two"].output} == {"0", "1"}  # never one GPU for two
        assert done["three"].status == "succeeded"
        assert done["three"].output in ("0", "1")
        assert logs["three"].count(waiting) == 1  # said once
    finally:
        await pool.close()
    assert backend.gpus.holders() == {}


def _said(logs: dict[str, list[str]], prediction_id: str, text: str) -> bool:
    return any(text in line for line in logs.get(prediction_id, []))


async def until(condition: Any, limit: float = LIMIT) -> None:
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.02)
