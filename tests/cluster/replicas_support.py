"""Two API replicas in one test process: platforms built by the composition root on one fresh
PostgreSQL database and one blob folder, each with its own data folder and a fake backend whose
model records every run and every cancel it sees (`Runs`), so a test counts runs exactly.

The fake model is the `slow` test package's schema (`tag`, `seconds`, `gate`): it runs until its
gate file exists, or for `seconds`, or until it is canceled.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from modelyard.api.platform import Platform
from modelyard.engine.backend import InstanceSpec
from modelyard.platform import build_app
from modelyard.runtime.events import Done, Event, Started
from modelyard.settings import Settings
from modelyard.store.accounts import ensure_admin

PACKAGE = Path(__file__).parents[1] / "e2e" / "packages" / "slow"
TERMINAL = {"succeeded", "failed", "canceled"}


@dataclass
class Runs:
    """What the model saw, on every replica: (replica, prediction id) per run and per cancel."""

    started: list[tuple[str, str]] = field(default_factory=list)
    canceled: list[tuple[str, str]] = field(default_factory=list)

    def counts(self) -> Counter[str]:
        return Counter(prediction_id for _, prediction_id in self.started)

    def where(self, prediction_id: str) -> list[str]:
        return [replica for replica, p in self.started if p == prediction_id]


class FakeBackend:
    def __init__(self, name: str, runs: Runs) -> None:
        self.name, self.runs = name, runs

    def instance(self, spec: InstanceSpec) -> FakeInstance:
        return FakeInstance(self.name, self.runs)

    def can_place(self, hardware: Any) -> bool:
        return True

    async def close(self) -> None:
        pass


class FakeInstance:
    lost = False

    def __init__(self, name: str, runs: Runs) -> None:
        self.name, self.runs = name, runs
        self._cancels: set[str] = set()

    async def start(self, progress: Any) -> int:
        return 1

    async def predict(self, inputs: dict[str, Any], prediction_id: str) -> AsyncIterator[Event]:
        self.runs.started.append((self.name, prediction_id))
        yield Started(time.time())
        gate = inputs.get("gate") or ""
        deadline = time.monotonic() + (120 if gate else float(inputs.get("seconds") or 0))
        while prediction_id not in self._cancels and time.monotonic() < deadline:
            if gate and Path(gate).exists():
                break
            await asyncio.sleep(0.01)
        if prediction_id in self._cancels:
            self.runs.canceled.append((self.name, prediction_id))
            yield Done("canceled")
        else:
            yield Done("succeeded", output=inputs["tag"])

    async def cancel(self, prediction_id: str) -> bool:
        self._cancels.add(prediction_id)
        return True

    async def stop(self) -> None:
        pass


@dataclass
class Side:
    """One replica: its app, platform and an API client with the admin's token."""

    name: str
    app: FastAPI
    client: httpx.AsyncClient
    stack: AsyncExitStack

    @property
    def platform(self) -> Platform:
        return self.app.state.platform

    async def stop(self) -> None:
        """A graceful stop (the lifespan's end), as SIGINT/SIGTERM does to a server."""
        await self.stack.aclose()

    async def create(self, version: str, **body: Any) -> dict[str, Any]:
        answer = await self.client.post("/v1/predictions", json={"version": version, **body})
        assert answer.status_code == 201, answer.text
        return answer.json()

    async def get(self, prediction_id: str) -> dict[str, Any]:
        return (await self.client.get(f"/v1/predictions/{prediction_id}")).json()

    async def wait_for(
        self, prediction_id: str, statuses: set[str] = TERMINAL, timeout: float = 30.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            body = await self.get(prediction_id)
            if body["status"] in statuses or time.monotonic() > deadline:
                assert body["status"] in statuses, body
                return body
            await asyncio.sleep(0.02)


def settings(root: Path, name: str, url: str, lease_ttl: float) -> Settings:
    return Settings(
        data_dir=root / name,
        public_url=f"http://{name}.modelyard.test",
        database_url=url,
        storage_url=str(root / "blobs"),  # the blobs both replicas read (in production: S3)
        lease_ttl=lease_ttl,
        webhook_retry_delays=(0.2, 0.5),
    )


async def start_side(
    name: str, config: Settings, runs: Runs, token: str, outer: AsyncExitStack
) -> Side:
    app = build_app(config, web=False, backend=FakeBackend(name, runs))
    stack = AsyncExitStack()
    await stack.enter_async_context(app.router.lifespan_context(app))
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=config.public_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    await stack.enter_async_context(client)
    outer.push_async_callback(stack.aclose)  # stops it at the test's end unless stopped before
    return Side(name, app, client, stack)


def admin_token(config: Settings) -> str:
    from modelyard.store.database import Database

    db = Database(config.db_url)
    db.migrate()
    with db.session() as session:
        issued = ensure_admin(session, "admin")
    db.dispose()
    assert issued is not None
    return issued.token


async def push(side: Side, tmp_path: Path, name: str = "slow") -> str:
    archive = shutil.make_archive(str(tmp_path / name), "gztar", PACKAGE)
    created = await side.client.post(
        "/v1/models", json={"owner": "admin", "name": name, "visibility": "private",
                            "hardware": "cpu"},
    )  # fmt: skip
    assert created.status_code in (200, 201), created.text
    answer = await side.client.post(
        f"/v1/models/admin/{name}/versions",
        content=Path(archive).read_bytes(),
        headers={"Content-Type": "application/gzip"},
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


async def eventually(check: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
