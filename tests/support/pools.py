"""A real `Pool` of real worker processes for the engine's tests: a SQLite database with one
version, the real writer, the local backend, and pools built as `Engine._new_pool` builds them,
watched by an `InstanceBoard` (tests/engine/test_healthchecks.py, test_instance_control.py).
Waits are bounded and poll state, never time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from modelyard.cogspec.config import load_config
from modelyard.cogspec.schema import predictor_schema
from modelyard.engine.backend import InstanceSpec
from modelyard.engine.instances import InstanceBoard
from modelyard.engine.jobs import Job, PoolKey
from modelyard.engine.local_backend import LocalBackend
from modelyard.engine.pools import Pool, PoolPolicy
from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.runtime.events import Done
from modelyard.settings import Settings
from modelyard.store.accounts import create_account
from modelyard.store.database import Database
from modelyard.store.instances import InstanceView, instances_of
from modelyard.store.models import add_version, create_model
from modelyard.store.writer import Writer

FIXTURES = Path(__file__).parents[1] / "fixtures"
LIMIT = 120.0  # seconds any one step may take (the first boot builds the environment)
REPLICA = "r-test"


@dataclass
class PoolRig:
    """A database with one version, a writer and the backend; what each job ended with."""

    db: Database
    writer: Writer
    backend: LocalBackend
    model_id: int
    version_pk: int
    done: dict[str, Done]

    def board(self, interval: float = 0.0, replace_after: int = 0) -> InstanceBoard:
        """A board snapshotting to the database (`interval` 0: no healthchecks)."""
        board = InstanceBoard(Settings(data_dir=Path(".")), self.writer, lambda: REPLICA)
        board.interval, board.replace_after = interval, replace_after
        return board

    def pool(self, fixture: str, policy: PoolPolicy, board: InstanceBoard) -> Pool:
        """A started pool running tests/fixtures/`fixture`, watched by `board`."""
        package = FIXTURES / fixture
        spec = InstanceSpec(
            version_id=fixture,
            package_key=fixture,
            package_dir=package,
            mode="predict",
            schema=predictor_schema(package, load_config(package)),
        )

        async def make_instance() -> Any:
            return self.backend.instance(spec)

        async def run(instance: Any, job: Job) -> None:
            assert job.inputs is not None
            async for event in instance.predict(job.inputs, job.prediction_id):
                if isinstance(event, Done):
                    self.done[job.prediction_id] = event

        pool = Pool(
            name=fixture,
            policy=policy,
            make_instance=make_instance,
            run=run,
            boot_log=lambda *_: None,
            boot_failed=lambda job, error: self.done.setdefault(
                job.prediction_id, Done("failed", error=error)
            ),
            watcher=board.watcher(PoolKey(self.version_pk, "predict")),
        )
        pool.start()
        return pool

    def put(self, pool: Pool, name: str, **inputs: Any) -> None:
        pool.put(Job(name, PoolKey(self.version_pk, "predict"), {"seconds": 0.0, **inputs}))

    def rows(self) -> list[InstanceView]:
        with self.db.session() as session:
            return instances_of(session, model_id=self.model_id)


@asynccontextmanager
async def pool_rig(env_builder: EnvironmentBuilder, folder: Path) -> AsyncIterator[PoolRig]:
    db = Database(f"sqlite:///{folder / 'db.sqlite'}")
    db.migrate()
    with db.session() as session:
        owner = create_account(session, "ada")
        model = create_model(session, owner, "pooled")
        version, _ = add_version(
            session,
            model.model,
            version_id="v" * 64,
            package_key="p" * 64,
            cog_version="0.16.8",
            openapi_schema={"openapi": "3.0.2"},
        )
        model_id, version_pk = model.model.id, version.pk
    writer = Writer(db)
    backend = LocalBackend(env_builder, httpx.AsyncClient())
    try:
        yield PoolRig(db, writer, backend, model_id, version_pk, {})
    finally:
        await backend.close()
        await asyncio.to_thread(writer.stop)
        db.dispose()


async def until(condition: Callable[[], bool], limit: float = LIMIT) -> None:
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.05)
