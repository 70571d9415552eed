"""The engine's periodic healthchecks and instance snapshots, with real worker processes.

A real `Pool` runs the `healthcheck` fixture (tests/fixtures/healthcheck: a prediction with
`healthy=false` makes its `healthcheck()` return False from then on) on the local backend, and
an `InstanceBoard` watches it with a short interval, writing snapshots to a real SQLite
database through the real writer. The board and the pool are what the engine wires together
(`Engine._new_pool`); building them directly keeps the interval and the model under the test's
control.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from support.pools import FIXTURES, LIMIT, PoolRig, pool_rig, until

from modelyard.cogspec.config import load_config
from modelyard.cogspec.schema import predictor_schema
from modelyard.engine.backend import InstanceSpec
from modelyard.engine.instances import InstanceBoard
from modelyard.engine.pools import Pool, PoolPolicy
from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")

PACKAGE = FIXTURES / "healthcheck"


class Rig(PoolRig):
    """The pool rig, running the healthcheck fixture on one instance."""

    def pool(self, board: InstanceBoard) -> Pool:  # type: ignore[override]
        return super().pool("healthcheck", PoolPolicy(max_instances=1, idle_timeout=300.0), board)


@pytest_asyncio.fixture(loop_scope="session")
async def rig(env_builder: EnvironmentBuilder, tmp_path: Path) -> AsyncIterator[Rig]:
    async with pool_rig(env_builder, tmp_path) as base:
        yield Rig(**vars(base))


async def test_ready_instances_are_checked_periodically_and_the_latest_result_is_stored(
    rig: Rig,
) -> None:
    board = rig.board(interval=0.2, replace_after=0)
    await board.start()
    pool = rig.pool(board)
    try:
        rig.put(pool, "first")
        await until(lambda: "first" in rig.done)
        assert rig.done["first"].status == "succeeded"
        (member,) = pool.members
        watched = board.watched[member.id]
        await until(lambda: watched.health is not None)
        first_check = watched.checked_at
        assert watched.health is not None and watched.health.status == "READY"
        await until(lambda: watched.checked_at != first_check)  # checked again: periodic

        await until(lambda: [r.health_status for r in rig.rows()] == ["READY"])
        (row,) = rig.rows()
        assert (row.id, row.state, row.hardware, row.mode) == (member.id, "idle", "cpu", "predict")
        assert row.health_error is None and row.checked_at is not None

        # From now on its healthcheck() returns False: shown, with Cog's words, not replaced.
        rig.put(pool, "sicken", healthy=False)
        await until(lambda: "sicken" in rig.done)
        await until(lambda: [r.health_status for r in rig.rows()] == ["UNHEALTHY"])
        (row,) = rig.rows()
        assert row.health_error == "user-defined healthcheck returned False"
        assert watched.failures >= 1 and member.retired is None and pool.members == [member]

        rig.put(pool, "heal", healthy=True)  # it still takes predictions; healthy again after
        await until(lambda: "heal" in rig.done)
        assert rig.done["heal"].status == "succeeded"
        await until(lambda: [r.health_status for r in rig.rows()] == ["READY"])
    finally:
        await pool.close()
        await board.flush()
    assert rig.rows() == []  # a stopped instance leaves the table
    await board.close()


async def test_an_instance_unhealthy_several_times_in_a_row_is_replaced(rig: Rig) -> None:
    board = rig.board(interval=0.2, replace_after=2)
    await board.start()
    pool = rig.pool(board)
    try:
        rig.put(pool, "sicken", healthy=False)
        await until(lambda: "sicken" in rig.done)
        (sick,) = pool.members
        assert sick.instance is not None
        # Retired, then stopped (nothing ran on it), then gone from the board.
        await until(lambda: not pool.members and sick.id not in board.watched)
        assert sick.retired is not None and "returned False" in sick.retired
        await board.flush()
        assert rig.rows() == []

        rig.put(pool, "after")  # a fresh instance boots for what comes next
        await until(lambda: "after" in rig.done)
        assert rig.done["after"].status == "succeeded"
        (fresh,) = pool.members
        assert fresh.id != sick.id
        await until(lambda: [r.id for r in rig.rows()] == [fresh.id])
    finally:
        await pool.close()
        await board.close()


async def test_a_ray_instance_reports_its_workers_health(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The Ray backend asks its actor, which asks its worker: READY, then UNHEALTHY with Cog's
    error once the healthcheck says no; a stopped instance is STOPPED."""
    pytest.importorskip("ray")
    from support.raycluster import ray_cluster

    from modelyard.engine.ray_backend import RayBackend
    from modelyard.runtime.package import pack_package
    from modelyard.runtime.sandbox import SHARED_ENV
    from modelyard.store.blobs import BlobStore

    data = tmp_path / "data"
    key = BlobStore(data / "blobs").put_bytes(pack_package(PACKAGE).data).key
    schema = predictor_schema(PACKAGE, load_config(PACKAGE))
    spec = InstanceSpec(f"healthcheck-{key[:8]}", key, PACKAGE, "predict", schema)
    with ray_cluster(env={SHARED_ENV: str(tmp_path_factory.getbasetemp())}) as cluster:
        cluster.connect()
        backend = RayBackend(Settings(data_dir=data, placement_timeout=60))
        instance = backend.instance(spec)
        try:
            async with asyncio.timeout(LIMIT):
                await instance.start(lambda _: None)
                assert (await instance.health()).status == "READY"
                async for _ in instance.predict({"healthy": False}, "sicken"):
                    pass
                health = await instance.health()
            assert health.status == "UNHEALTHY"
            assert health.error == "user-defined healthcheck returned False"
        finally:
            await instance.stop()
            await backend.close()
        assert (await instance.health()).status == "STOPPED"
