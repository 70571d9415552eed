"""Instance control on a real `Pool` with real worker processes: `min_instances` booted ahead of
demand, a lower `max_instances` stopping the surplus once idle, a drained pool closing, and a
warm boot that fails backing off.

The pool runs tests/fixtures/healthcheck (`seconds` keeps a prediction busy) or
tests/fixtures/setup_failure on the local backend; an `InstanceBoard` snapshots its members to a
real SQLite `instances` table, which is where the states are checked. Waits are bounded and
poll state, never time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from support.pools import LIMIT, PoolRig, pool_rig, until

from modelyard.engine.instances import InstanceBoard
from modelyard.engine.pools import Pool, PoolPolicy
from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.store.instances import InstanceView

pytestmark = pytest.mark.asyncio(loop_scope="session")

BUSY = 5.0  # seconds a "busy" prediction works: long enough to act while it runs


@dataclass
class Rig:
    """The pool rig, with one board (no healthchecks) that every pool of the test reports to."""

    base: PoolRig
    board: InstanceBoard

    @property
    def done(self) -> dict[str, Any]:
        return self.base.done

    def pool(self, fixture: str, policy: PoolPolicy) -> Pool:
        return self.base.pool(fixture, policy, self.board)

    def put(self, pool: Pool, name: str, seconds: float = 0.0) -> None:
        self.base.put(pool, name, seconds=seconds)

    async def states(self) -> list[str]:
        """The pool's instances as the table has them (after a flush of the board)."""
        await self.board.flush()
        views: list[InstanceView] = self.base.rows()
        return sorted(v.state for v in views)


@pytest_asyncio.fixture(loop_scope="session")
async def rig(env_builder: EnvironmentBuilder, tmp_path: Path) -> AsyncIterator[Rig]:
    async with pool_rig(env_builder, tmp_path) as base:
        board = base.board()
        await board.start()
        try:
            yield Rig(base, board)
        finally:
            await board.close()


async def until_states(rig: Rig, expected: list[str], limit: float = LIMIT) -> None:
    async with asyncio.timeout(limit):
        while await rig.states() != expected:
            await asyncio.sleep(0.1)


async def test_min_instances_boot_ahead_of_demand_and_stay(rig: Rig) -> None:
    pool = rig.pool("healthcheck", PoolPolicy(max_instances=3, min_instances=1, idle_timeout=0.1))
    try:
        await until_states(rig, ["idle"])  # no prediction asked for it
        pool.set_policy(PoolPolicy(max_instances=3, min_instances=2, idle_timeout=0.1))
        await until_states(rig, ["idle", "idle"])
        rig.put(pool, "p1")
        await until(lambda: "p1" in rig.done)
        assert rig.done["p1"].status == "succeeded"
        # Idle past their timeout, both stay: they are the minimum. A kick makes the pool look.
        pool.set_policy(pool.policy)
        await asyncio.sleep(0.5)
        assert await rig.states() == ["idle", "idle"]
        # min back to 0: they go once idle past the timeout.
        pool.set_policy(PoolPolicy(max_instances=3, min_instances=0, idle_timeout=0.1))
        await until_states(rig, [])
    finally:
        await pool.close()


async def test_a_lower_max_stops_the_surplus_once_idle_never_a_busy_one(rig: Rig) -> None:
    pool = rig.pool("healthcheck", PoolPolicy(max_instances=2, idle_timeout=300.0))
    try:
        rig.put(pool, "a", seconds=BUSY)
        rig.put(pool, "b", seconds=BUSY)
        await until(lambda: sum(1 for m in pool.members if m.ready and m.busy) == 2)
        pool.set_policy(PoolPolicy(max_instances=1, idle_timeout=300.0))
        rig.put(pool, "c")  # waits for the one instance that stays
        await until(lambda: {"a", "b", "c"} <= set(rig.done))
        # Both busy ones finished their work: neither was killed.
        assert [rig.done[p].status for p in ("a", "b", "c")] == ["succeeded"] * 3
        await until_states(rig, ["idle"])  # the surplus stopped; idle_timeout is 300 s
        assert len(pool.members) == 1
    finally:
        await pool.close()


async def test_a_drained_pool_runs_what_it_holds_then_closes(rig: Rig) -> None:
    pool = rig.pool("healthcheck", PoolPolicy(max_instances=1, min_instances=1, idle_timeout=300))
    drained: list[Pool] = []
    pool.on_drained = drained.append
    try:
        rig.put(pool, "running", seconds=1.0)
        rig.put(pool, "queued")
        await until(lambda: any(m.busy for m in pool.members))
        pool.drain()
        await until(lambda: drained == [pool])
        assert rig.done["running"].status == "succeeded"
        assert rig.done["queued"].status == "succeeded"  # it ran here, once
        await pool.close()  # what the engine does when told (InstanceControl._drained)
        await until_states(rig, [])
    finally:
        await pool.close()


async def test_a_warm_boot_that_fails_backs_off(rig: Rig) -> None:
    pool = rig.pool("setup_failure", PoolPolicy(max_instances=1, min_instances=1))
    pool.backoff.first = 0.2  # short, so that the test sees several tries
    try:
        await until(lambda: pool.backoff.failures >= 3)
        # Each try waited twice as long as the one before, and nothing boots meanwhile.
        failures, delay = pool.backoff.failures, pool.backoff.delay
        assert delay == pytest.approx(0.2 * 2 ** (failures - 1))
        assert not pool.members or not pool.members[0].ready
        assert "weights file is corrupt" in (pool.backoff.error or "")
        # A prediction that arrives meanwhile fails with the error, without a boot of its own.
        rig.put(pool, "late")
        await until(lambda: "late" in rig.done)
        assert rig.done["late"].status == "failed"
        assert "weights file is corrupt" in (rig.done["late"].error or "")
    finally:
        await pool.close()


async def test_new_hardware_replaces_the_instances_once_idle(rig: Rig) -> None:
    pool = rig.pool("healthcheck", PoolPolicy(max_instances=1, min_instances=1))
    try:
        await until_states(rig, ["idle"])
        (old,) = pool.members
        rig.put(pool, "busy", seconds=1.0)
        await until(lambda: old.busy > 0)
        pool.renew("the deployment's hardware changed")  # what InstanceControl.apply does
        await until(lambda: "busy" in rig.done)
        assert rig.done["busy"].status == "succeeded"  # it finished on the old instance
        await until(lambda: len(pool.members) == 1 and pool.members[0] is not old)
        await until_states(rig, ["idle"])  # the minimum, booted again
    finally:
        await pool.close()
