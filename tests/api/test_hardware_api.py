"""Hardware through the API, in process (as tests/api/test_inprocess.py): `GET /v1/hardware`
lists what the backend can place, models and deployments accept only those SKUs, a version with
`build.gpu: true` cannot land on a SKU without GPUs, and the engine hands each instance its
pool's hardware. The backend is a stand-in that answers `can_place` for GPUs this machine does
not have; its instances never finish booting, so no worker runs.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.billing.hardware import Hardware
from modelyard.engine.backend import Instance, InstanceSpec
from modelyard.platform import build_app
from modelyard.settings import Settings
from modelyard.store.accounts import ensure_admin
from modelyard.store.models import get_model
from modelyard.store.tables import Model

pytestmark = pytest.mark.asyncio(loop_scope="session")

PACKAGE = Path(__file__).parents[1] / "e2e" / "packages" / "slow"
GPU_NEEDED = "this version needs a GPU (build.gpu: true in cog.yaml)"


class PlacingBackend:
    """Places every CPU SKU and up to `gpus[model]` GPUs of each GPU model."""

    def __init__(self, gpus: dict[str, int]) -> None:
        self.gpus = gpus
        self.specs: list[InstanceSpec] = []

    def can_place(self, hardware: Hardware) -> bool:
        if hardware.gpus == 0:
            return True
        return hardware.gpus <= self.gpus.get(hardware.gpu_model or "", 0)

    def instance(self, spec: InstanceSpec) -> Instance:
        self.specs.append(spec)
        return _Held()  # type: ignore[return-value]

    async def close(self) -> None:
        pass


class _CpuOnly(PlacingBackend):
    """A backend written before `can_place` existed: the API treats it as CPU only."""

    can_place = None  # type: ignore[assignment]


class _Held:
    lost = False

    async def start(self, progress: object) -> int:
        await asyncio.Event().wait()  # until the pool closes
        return 1

    def predict(self, inputs: object, prediction_id: str) -> object:
        raise AssertionError("never ready")

    async def cancel(self, prediction_id: str) -> bool:
        return False

    async def stop(self) -> None:
        pass


class Api:
    def __init__(self, client: httpx.AsyncClient, backend: PlacingBackend, app: Any) -> None:
        self.client, self.backend, self.platform = client, backend, app.state.platform


@asynccontextmanager
async def serve(
    tmp_path: Path,
    backend: PlacingBackend,
    hardware_file: Path | None = None,
    idle: float = 42.0,
    max_instances: int = 1,
) -> AsyncIterator[Api]:
    settings = Settings(
        data_dir=tmp_path / "data",
        public_url="http://modelyard.test",
        hardware_file=hardware_file,
        idle_timeout=idle,
        max_instances=max_instances,
    )
    app = build_app(settings, backend=backend, web=False)  # type: ignore[arg-type]
    with app.state.platform.db.session() as session:
        issued = ensure_admin(session, "admin")
    assert issued is not None
    headers = {"Authorization": f"Bearer {issued.token}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=settings.public_url, headers=headers
        ) as client,
    ):
        yield Api(client, backend, app)


@pytest.fixture
def gpu_package(tmp_path: Path) -> Path:
    """The `slow` test package with `build.gpu: true`."""
    package = tmp_path / "gpu-package"
    shutil.copytree(PACKAGE, package)
    text = (package / "cog.yaml").read_text()
    (package / "cog.yaml").write_text(text.replace("build:\n", "build:\n  gpu: true\n"))
    return package


async def create_model(api: Api, name: str, hardware: str = "cpu") -> httpx.Response:
    body = {"owner": "admin", "name": name, "visibility": "private", "hardware": hardware}
    return await api.client.post("/v1/models", json=body)


async def push(api: Api, tmp_path: Path, name: str, package: Path = PACKAGE) -> str:
    archive = shutil.make_archive(str(tmp_path / f"{name}-archive"), "gztar", package)
    answer = await api.client.post(
        f"/v1/models/admin/{name}/versions",
        content=Path(archive).read_bytes(),
        headers={"Content-Type": "application/gzip"},
    )
    assert answer.status_code in (200, 201), answer.text
    return answer.json()["id"]


def invalid(answer: httpx.Response, field: str, *words: str) -> str:
    """A 422 problem+json whose one invalid field is `field`; returns its description."""
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    [problem] = answer.json()["invalid_fields"]
    assert problem["field"] == field, problem
    for word in words:
        assert word in problem["description"], problem
    return problem["description"]


def stored_hardware(api: Api, name: str) -> str:
    with api.platform.db.session() as session:
        row = get_model(session, "admin", name)
        assert row is not None
        return row.model.hardware


async def finished(api: Api, prediction_id: str) -> dict[str, Any]:
    for _ in range(1000):
        body = (await api.client.get(f"/v1/predictions/{prediction_id}")).json()
        if body["status"] in ("succeeded", "failed", "canceled"):
            return body
        await asyncio.sleep(0.01)
    raise AssertionError(f"{prediction_id} never ended: {body}")


async def booted(api: Api, count: int) -> InstanceSpec:
    for _ in range(500):
        if len(api.backend.specs) >= count:
            return api.backend.specs[count - 1]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no instance number {count} was asked for")


# --- GET /v1/hardware -----------------------------------------------------------------------


async def test_the_list_is_what_the_backend_can_place_in_the_tables_order(tmp_path: Path) -> None:
    async with serve(tmp_path, PlacingBackend({"t4": 1, "l40s": 2})) as api:
        answer = await api.client.get("/v1/hardware")
        assert answer.status_code == 200
        assert answer.json() == [  # a bare array, as Replicate's (the clients iterate it)
            {"sku": "cpu", "name": "CPU"},
            {"sku": "gpu-t4", "name": "Nvidia T4 GPU"},
            {"sku": "gpu-l40s", "name": "Nvidia L40S GPU"},
            {"sku": "gpu-2x-l40s", "name": "2x Nvidia L40S GPU"},
        ]
        assert (
            await api.client.get("/v1/hardware", headers={"Authorization": ""})
        ).status_code == 401


async def test_a_backend_that_cannot_answer_runs_cpu_only(tmp_path: Path) -> None:
    async with serve(tmp_path, _CpuOnly({"t4": 8})) as api:
        assert (await api.client.get("/v1/hardware")).json() == [{"sku": "cpu", "name": "CPU"}]


async def test_the_hardware_file_changes_the_list(tmp_path: Path) -> None:
    path = tmp_path / "hardware.yaml"
    path.write_text(
        "hardware:\n"
        "  gpu-t4: {enabled: false}\n"
        "  cpu-large: {name: Large CPU, price_per_second: 0.0003}\n"
        "  gpu-rtx-4090: {name: Nvidia RTX 4090 GPU, price_per_second: 0.0003, gpus: 1,"
        " gpu_model: rtx-4090}\n"
    )
    async with serve(tmp_path, PlacingBackend({"t4": 1, "rtx-4090": 1}), path) as api:
        assert (await api.client.get("/v1/hardware")).json() == [
            {"sku": "cpu", "name": "CPU"},
            {"sku": "cpu-large", "name": "Large CPU"},
            {"sku": "gpu-rtx-4090", "name": "Nvidia RTX 4090 GPU"},
        ]
        assert api.platform.hardware is api.platform.engine.hardware
        assert (await create_model(api, "big", "gpu-rtx-4090")).status_code == 201
        invalid(await create_model(api, "old", "gpu-t4"), "hardware", "cpu, cpu-large")


# --- models ---------------------------------------------------------------------------------


async def test_models_take_a_sku_the_table_knows_and_the_backend_places(tmp_path: Path) -> None:
    async with serve(tmp_path, PlacingBackend({"t4": 1})) as api:
        unknown = invalid(await create_model(api, "a", "gpu-h1000"), "hardware")
        assert unknown == "must be one of cpu, gpu-t4 (GET /v1/hardware lists them)"
        elsewhere = invalid(await create_model(api, "a", "gpu-h100"), "hardware")
        assert elsewhere.startswith("no machine of this installation can run gpu-h100 now; ")
        assert elsewhere.endswith("must be one of cpu, gpu-t4 (GET /v1/hardware lists them)")
        assert (await api.client.get("/v1/models/admin/a")).status_code == 404  # none made
        created = await create_model(api, "a", "gpu-t4")
        assert created.status_code == 201, created.text
        assert stored_hardware(api, "a") == "gpu-t4"

        patch = api.client.patch
        invalid(await patch("/v1/models/admin/a", json={"hardware": "gpu-8x-l40s"}), "hardware")
        invalid(await patch("/v1/models/admin/a", json={"hardware": None}), "hardware")
        both = await patch("/v1/models/admin/a", json={"hardware": "tpu", "description": "x"})
        invalid(both, "hardware", "cpu, gpu-t4")
        model = (await api.client.get("/v1/models/admin/a")).json()
        assert model["description"] is None and stored_hardware(api, "a") == "gpu-t4"
        changed = await patch("/v1/models/admin/a", json={"hardware": "cpu"})
        assert changed.status_code == 200 and stored_hardware(api, "a") == "cpu"


async def test_a_gpu_version_may_be_pushed_to_a_cpu_model_but_fails_at_boot(
    tmp_path: Path, gpu_package: Path
) -> None:
    """As on Replicate, the push is taken (versions are content; the hardware is the model's,
    and may change after); its predictions fail saying what to change, and once the model is
    on a GPU the next prediction boots there."""
    async with serve(tmp_path, PlacingBackend({"t4": 1, "h100": 1})) as api:
        assert (await create_model(api, "painter")).status_code == 201
        version = await push(api, tmp_path, "painter", gpu_package)
        body = {"version": version, "input": {"tag": "t"}}
        failed = await finished(
            api, (await api.client.post("/v1/predictions", json=body)).json()["id"]
        )
        assert failed["status"] == "failed"
        assert failed["error"] == (
            f"setup failed: {GPU_NEEDED} but model admin/painter runs on cpu; "
            "choose GPU hardware: gpu-t4, gpu-h100"
        )
        assert api.backend.specs == []  # no instance was asked for

        patched = await api.client.patch("/v1/models/admin/painter", json={"hardware": "gpu-h100"})
        assert patched.status_code == 200
        await api.client.post("/v1/predictions", json=body)
        spec = await booted(api, 1)
        assert spec.hardware.sku == "gpu-h100" and spec.hardware.gpus == 1
        assert spec.idle_timeout == 42.0  # the server's (InstanceSpec's default is 300)


async def test_a_sku_gone_from_the_table_fails_the_boot_clearly(tmp_path: Path) -> None:
    async with serve(tmp_path, PlacingBackend({})) as api:
        assert (await create_model(api, "old")).status_code == 201
        version = await push(api, tmp_path, "old")
        with api.platform.db.session() as session:  # as if the hardware file dropped it since
            row = get_model(session, "admin", "old")
            assert row is not None
            session.get_one(Model, row.model.id).hardware = "gpu-retired"
        body = {"version": version, "input": {"tag": "t"}}
        failed = await finished(
            api, (await api.client.post("/v1/predictions", json=body)).json()["id"]
        )
        assert failed["error"] == (
            "setup failed: model admin/old runs on hardware 'gpu-retired', which this "
            "installation's hardware table no longer has; choose one of: cpu"
        )


async def test_a_cpu_version_on_a_model_gets_the_models_hardware(tmp_path: Path) -> None:
    async with serve(tmp_path, PlacingBackend({"t4": 1})) as api:
        assert (await create_model(api, "quick", "gpu-t4")).status_code == 201
        version = await push(api, tmp_path, "quick")
        await api.client.post("/v1/predictions", json={"version": version, "input": {"tag": "t"}})
        spec = await booted(api, 1)
        assert spec.hardware == api.platform.hardware.get("gpu-t4")


async def test_instances_booted_after_a_hardware_change_get_the_new_hardware(
    tmp_path: Path,
) -> None:
    async with serve(tmp_path, PlacingBackend({"t4": 1, "l40s": 1}), max_instances=2) as api:
        assert (await create_model(api, "mover", "gpu-t4")).status_code == 201
        version = await push(api, tmp_path, "mover")
        body = {"version": version, "input": {"tag": "t"}}
        await api.client.post("/v1/predictions", json=body)
        assert (await booted(api, 1)).hardware.sku == "gpu-t4"
        changed = await api.client.patch("/v1/models/admin/mover", json={"hardware": "gpu-l40s"})
        assert changed.status_code == 200, changed.text
        await api.client.post("/v1/predictions", json=body)  # the first instance never frees
        assert (await booted(api, 2)).hardware.sku == "gpu-l40s"


# --- deployments ----------------------------------------------------------------------------


def deployment(version: str, hardware: str, name: str = "dep") -> dict[str, Any]:
    return {
        "name": name,
        "model": "admin/painter",
        "version": version,
        "hardware": hardware,
        "min_instances": 0,
        "max_instances": 1,
    }


async def test_deployments_check_the_sku_and_the_versions_gpu_need(
    tmp_path: Path, gpu_package: Path
) -> None:
    async with serve(tmp_path, PlacingBackend({"t4": 1})) as api:
        post, patch = api.client.post, api.client.patch
        assert (await create_model(api, "painter")).status_code == 201
        cpu_version = await push(api, tmp_path, "painter")
        gpu_version = await push(api, tmp_path, "painter", gpu_package)

        invalid(await post("/v1/deployments", json=deployment(gpu_version, "gpu-a40")), "hardware")
        invalid(await post("/v1/deployments", json=deployment(gpu_version, "gpu-h100")), "hardware")
        on_cpu = invalid(
            await post("/v1/deployments", json=deployment(gpu_version, "cpu")), "hardware"
        )
        assert on_cpu == f"{GPU_NEEDED}, so it cannot run on cpu; choose GPU hardware: gpu-t4"
        assert (await api.client.get("/v1/deployments")).json()["results"] == []  # none made

        made = await post("/v1/deployments", json=deployment(gpu_version, "gpu-t4"))
        assert made.status_code == 200, made.text
        release = made.json()["current_release"]
        assert (release["number"], release["configuration"]["hardware"]) == (1, "gpu-t4")

        url = "/v1/deployments/admin/dep"
        invalid(await patch(url, json={"hardware": "cpu"}), "hardware", GPU_NEEDED)
        invalid(await patch(url, json={"hardware": "gpu-l40s"}), "hardware", "cpu, gpu-t4")
        both = await patch(url, json={"hardware": "cpu", "max_instances": 3})
        invalid(both, "hardware", GPU_NEEDED)
        current = (await api.client.get(url)).json()["current_release"]
        assert (current["number"], current["configuration"]["max_instances"]) == (1, 1)

        moved = await patch(url, json={"hardware": "cpu", "version": cpu_version})
        assert moved.status_code == 200, moved.text
        assert moved.json()["current_release"]["number"] == 2
        back = invalid(await patch(url, json={"version": gpu_version}), "version", GPU_NEEDED)
        assert back.endswith("so it cannot run on cpu; choose GPU hardware: gpu-t4")
        assert (await patch(url, json={"max_instances": 2})).status_code == 200


async def test_a_deployments_instances_get_its_releases_hardware_and_idle_timeout(
    tmp_path: Path, gpu_package: Path
) -> None:
    async with serve(tmp_path, PlacingBackend({"t4": 1, "l40s": 2})) as api:
        assert (await create_model(api, "painter")).status_code == 201  # the model is on cpu
        version = await push(api, tmp_path, "painter", gpu_package)
        made = await api.client.post("/v1/deployments", json=deployment(version, "gpu-2x-l40s"))
        assert made.status_code == 200, made.text
        engine = api.platform.engine
        [(deployment_id, policy)] = engine.policies.items()
        engine.policies[deployment_id] = replace(policy, idle_timeout=7.5)  # a policy of its own
        run = await api.client.post(
            "/v1/deployments/admin/dep/predictions", json={"input": {"tag": "t"}}
        )
        assert run.status_code == 201, run.text
        spec = await booted(api, 1)
        assert (spec.hardware.sku, spec.hardware.gpus, spec.hardware.gpu_model) == (
            "gpu-2x-l40s",
            2,
            "l40s",
        )
        assert spec.idle_timeout == 7.5
