"""The Ray backend behind the whole platform, in this process: `build_app` with `backend="ray"`
(the composition root picks `RayBackend` and joins the cluster this process already drives),
the API over ASGI, a real two-node Ray cluster (support/raycluster.py) under it.

What holds: a file output made on a node reaches the client through the API's delivery URL,
stored by the actor and only recorded by the engine; a prediction sent to an instance whose node
died before it started waits (its logs say for what) and runs once the node is back, never
failing; one that was running when the node died fails within seconds, saying the machine was
lost.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

import httpx
import pytest_asyncio
import ray
from support.raycluster import WORKER_IP, RayCluster, ray_cluster

from modelyard.api.platform import Platform
from modelyard.engine import ray_backend
from modelyard.engine.ray_backend import RayBackend
from modelyard.platform import build_app
from modelyard.settings import Settings
from modelyard.store.accounts import ensure_admin
from modelyard.store.database import Database

pytestmark = pytest.mark.asyncio(loop_scope="session")

PACKAGES = Path(__file__).parents[1] / "e2e" / "packages"
PUBLIC_URL = "http://api.modelyard.test"
TERMINAL = {"succeeded", "failed", "canceled"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    with ray_cluster() as started:
        started.connect()
        yield started


@dataclass
class Api:
    client: httpx.AsyncClient
    platform: Platform
    folder: Path

    async def push(self, package: str | Path, hardware: str) -> str:
        folder = PACKAGES / package if isinstance(package, str) else package
        name = f"{folder.name}-{hardware}"
        archive = shutil.make_archive(str(self.folder / name), "gztar", folder)
        body = {"owner": "admin", "name": name, "visibility": "private", "hardware": hardware}
        created = await self.client.post("/v1/models", json=body)
        assert created.status_code in (200, 201), created.text
        answer = await self.client.post(
            f"/v1/models/admin/{name}/versions",
            content=Path(archive).read_bytes(),
            headers={"Content-Type": "application/gzip"},
        )
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    async def create(self, version: str, **values: Any) -> str:
        answer = await self.client.post(
            "/v1/predictions", json={"version": version, "input": values}
        )
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    async def get(self, prediction_id: str) -> dict[str, Any]:
        return dict((await self.client.get(f"/v1/predictions/{prediction_id}")).json())

    async def wait(
        self, prediction_id: str, statuses: set[str] = TERMINAL, timeout: float = 60.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen: list[str] = []  # every status it was seen in, in order
        while True:
            body = await self.get(prediction_id)
            if not seen or seen[-1] != body["status"]:
                seen.append(body["status"])
            if body["status"] in statuses:
                body["seen"] = seen
                return body
            assert time.monotonic() < deadline, f"{prediction_id} stayed {body['status']}"
            await asyncio.sleep(0.05)


@pytest_asyncio.fixture(loop_scope="session")
async def api(cluster: RayCluster, tmp_path: Path) -> AsyncIterator[Api]:
    config = Settings(
        data_dir=tmp_path / "data",
        public_url=PUBLIC_URL,
        backend="ray",
        ray_address=cluster.address,
        placement_timeout=120,
    )
    config.data_dir.mkdir(parents=True)
    db = Database(config.db_url)
    db.migrate()
    with db.session() as session:
        issued = ensure_admin(session, "admin")
    db.dispose()
    assert issued is not None
    app = build_app(config, web=False)
    platform: Platform = app.state.platform
    assert isinstance(platform.engine.backend, RayBackend)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url=PUBLIC_URL,
            headers={"Authorization": f"Bearer {issued.token}"},
            timeout=60,
        ) as client,
    ):
        yield Api(client, platform, tmp_path)


async def test_a_file_made_on_a_node_is_delivered_by_the_api(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def copying(*_: Any) -> None:
        raise AssertionError("the engine copied an output the actor had stored")

    monkeypatch.setattr(api.platform.blobs, "put_file", copying)
    version = await api.push("bigfile", "cpu")
    done = await api.wait(await api.create(version, megabytes=1))
    assert done["status"] == "succeeded", done
    assert done["output"].startswith(f"{PUBLIC_URL}/delivery/"), done["output"]
    download = await api.client.get(done["output"])
    assert download.status_code == 200
    assert len(download.content) == 1 << 20 and download.content.endswith(b"tail")


BROKEN = """from cog import BasePredictor


class Predictor(BasePredictor):
    def setup(self) -> None:
        print("setup: looking for weights", flush=True)
        raise RuntimeError("no weights here")

    def predict(self) -> str:
        return "never"
"""


async def test_a_failing_setup_fails_the_prediction_and_frees_its_actor(
    api: Api, tmp_path: Path
) -> None:
    package = tmp_path / "broken"
    package.mkdir()
    (package / "cog.yaml").write_text(
        'build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n'
    )
    (package / "predict.py").write_text(BROKEN)
    version = await api.push(package, "cpu")
    done = await api.wait(await api.create(version))
    assert done["status"] == "failed" and "no weights here" in done["error"], done
    assert done["error"].startswith("setup failed"), done["error"]
    assert "Running on Ray node" in done["logs"] and "setup: looking for weights" in done["logs"]
    actors = ray._private.state.actors().values()  # what the GCS knows, dead ones included
    mine = [a for a in actors if a["Name"].startswith(version)]
    assert mine and all(a["State"] == "DEAD" for a in mine), mine  # killed, not left idle


async def test_a_lost_node_requeues_what_had_not_started_and_fails_what_ran(
    api: Api, cluster: RayCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The idle instance must learn of its lost actor from the next prediction, not from its
    # lease renewal (which makes the pool replace it before any prediction reaches it).
    monkeypatch.setattr(ray_backend, "LEASE_RENEW", 3600.0)
    monkeypatch.setattr(ray_backend, "FIRST_WAIT_REPORT", 0.3)
    version = await api.push("slow", "gpu-t4")
    first = await api.wait(await api.create(version, tag="one"))
    assert first["status"] == "succeeded", first
    try:
        cluster.kill_worker_raylet()
        deadline = time.monotonic() + 30
        while any(n["Alive"] and n["NodeManagerAddress"] == WORKER_IP for n in ray.nodes()):
            assert time.monotonic() < deadline, "the node was never declared dead"
            await asyncio.sleep(0.1)

        second = await api.create(version, tag="two")
        while "Waiting for a Ray node for gpu-t4" not in (await api.get(second))["logs"]:
            assert time.monotonic() < deadline + 30, await api.get(second)
            await asyncio.sleep(0.1)
        assert (await api.get(second))["status"] == "starting"
        cluster.restart_worker()
        done = await api.wait(second, timeout=90)
        assert (done["status"], done["output"]) == ("succeeded", "two"), done
        assert "failed" not in done["seen"], done["seen"]  # it went back to the queue instead

        third = await api.create(version, tag="three", seconds=60)
        await api.wait(third, {"processing"})
        cluster.kill_worker_raylet()
        done = await api.wait(third, timeout=30)  # it would run 60 s: only the loss ends it
        assert done["status"] == "failed", done
        assert done["error"].startswith("The machine running this prediction was lost (Ray node")
        assert done["error"].endswith("Run it again."), done["error"]
    finally:
        if cluster.worker.pid_of("raylet") is None:
            cluster.restart_worker()
