"""API semantics in process: the platform built by the composition root, served to an
`httpx.ASGITransport` client. No server process and no worker is needed for what these check
(validation, problem+json, ownership, cancel of a queued prediction); tests where processes,
signals or the official clients matter keep their real servers (tests/e2e).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from modelyard.engine.backend import BootFailed, Instance, InstanceSpec
from modelyard.platform import build_app
from modelyard.settings import Settings
from modelyard.store.accounts import ensure_admin

pytestmark = pytest.mark.asyncio(loop_scope="session")

PACKAGE = Path(__file__).parents[1] / "e2e" / "packages" / "slow"


class HeldBackend:
    """A backend whose instances never finish booting: every prediction stays queued or booting,
    so these tests reach no worker. (Real instances are tested in tests/e2e; the instances here
    stand in for failures a real worker cannot be made to produce on demand.)"""

    def __init__(self) -> None:
        self.specs: list[InstanceSpec] = []
        self.make: type = _Held

    def instance(self, spec: InstanceSpec) -> Instance:
        self.specs.append(spec)
        return self.make()

    async def close(self) -> None:
        pass


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


class _Broken(_Held):
    """Starts, then fails inside the engine's reach: `predict` raises at once."""

    async def start(self, progress: object) -> int:
        return 1

    def predict(self, inputs: object, prediction_id: str) -> object:
        raise RuntimeError("the instance is broken")


class _Unstoppable(_Held):
    """Its boot fails, and so does stopping it."""

    async def start(self, progress: object) -> int:
        raise BootFailed("no GPU left")

    async def stop(self) -> None:
        raise OSError("cannot stop")


@pytest_asyncio.fixture(loop_scope="session")
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, HeldBackend]]:
    settings = Settings(data_dir=tmp_path / "data", public_url="http://modelyard.test")
    backend = HeldBackend()
    app = build_app(settings, backend=backend)
    platform = app.state.platform
    with platform.db.session() as session:
        issued = ensure_admin(session, "admin")
    assert issued is not None
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {issued.token}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url=settings.public_url, headers=headers
        ) as client,
    ):
        yield client, backend


async def push(client: httpx.AsyncClient, tmp_path: Path) -> str:
    archive = shutil.make_archive(str(tmp_path / "package"), "gztar", PACKAGE)
    created = await client.post("/v1/models", json={"owner": "admin", "name": "slow",
                                                    "visibility": "private",
                                                    "hardware": "cpu"})  # fmt: skip
    assert created.status_code in (200, 201), created.text
    answer = await client.post(
        "/v1/models/admin/slow/versions",
        content=Path(archive).read_bytes(),
        headers={"Content-Type": "application/gzip"},
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


async def test_invalid_input_is_a_422_and_nothing_is_stored(api, tmp_path: Path) -> None:
    client, backend = api
    version = await push(client, tmp_path)
    answer = await client.post(
        "/v1/predictions", json={"version": version, "input": {"tag": "t", "seconds": "soon"}}
    )
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert [f["field"] for f in answer.json()["invalid_fields"]] == ["input.seconds"]
    listed = await client.get("/v1/predictions")
    assert listed.json()["results"] == []
    assert backend.specs == []  # nothing was queued, so nothing booted


async def test_the_instance_gets_the_stored_schema_and_cancel_acts_on_the_job(
    api, tmp_path: Path
) -> None:
    client, backend = api
    version = await push(client, tmp_path)
    created = await client.post("/v1/predictions", json={"version": version, "input": {"tag": "t"}})
    assert created.status_code == 201, created.text
    prediction = created.json()
    stored = (await client.get(f"/v1/models/admin/slow/versions/{version}")).json()
    for _ in range(500):  # the pool boots an instance for it (one that never becomes ready)
        if backend.specs:
            break
        await asyncio.sleep(0.01)
    [spec] = backend.specs
    assert spec.schema == stored["openapi_schema"] and spec.version_id == version
    assert spec.mode == "predict" and spec.package_dir.is_dir()
    canceled = await client.post(f"/v1/predictions/{prediction['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    again = await client.get(f"/v1/predictions/{prediction['id']}")
    assert again.json()["status"] == "canceled"


async def test_another_accounts_prediction_is_a_404(api, tmp_path: Path) -> None:
    client, _ = api
    answer = await client.get("/v1/predictions/nosuchprediction00000000000")
    assert answer.status_code == 404
    assert answer.json()["detail"] == "The requested prediction does not exist."


async def finished(client: httpx.AsyncClient, prediction_id: str) -> dict:
    for _ in range(1000):
        body = (await client.get(f"/v1/predictions/{prediction_id}")).json()
        if body["status"] in ("succeeded", "failed", "canceled"):
            return body
        await asyncio.sleep(0.01)
    raise AssertionError(f"{prediction_id} never ended: {body}")


@pytest.mark.parametrize(
    ("instance", "error"),
    [
        (_Broken, "internal error: the instance is broken"),
        (_Unstoppable, "setup failed: no GPU left"),
    ],
)
async def test_a_failure_inside_the_engine_ends_the_prediction(
    api, tmp_path: Path, instance: type, error: str
) -> None:
    """An instance that raises where the engine does not expect it, or a boot that fails with
    an instance that cannot even be stopped: the prediction ends failed, saying why, and the
    pool goes on (the next prediction is dispatched too)."""
    client, backend = api
    backend.make = instance
    version = await push(client, tmp_path)
    for _ in range(2):
        created = await client.post(
            "/v1/predictions", json={"version": version, "input": {"tag": "t"}}
        )
        body = await finished(client, created.json()["id"])
        assert (body["status"], body["error"]) == ("failed", error)
