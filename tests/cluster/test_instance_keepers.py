"""A deployment's `min_instances` on two API replicas sharing one PostgreSQL database: exactly
one replica keeps them warm, and when it leaves, the other takes over (engine/policies.py).

Two platforms built by the composition root with a fake backend (replicas_support.py); each
replica's `InstanceControl.refresh` is called directly instead of waiting for its periodic one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import pytest_asyncio
from replicas_support import Runs, Side, admin_token, eventually, push, settings, start_side
from support.postgres import fresh_database

pytestmark = pytest.mark.asyncio(loop_scope="session")
LEASE_TTL = 1.5


@pytest_asyncio.fixture(loop_scope="session")
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Side, Side]]:
    with fresh_database("keepers") as url:
        configs = [settings(tmp_path, name, url, LEASE_TTL) for name in ("a", "b")]
        token = await asyncio.to_thread(admin_token, configs[0])
        async with AsyncExitStack() as stack:
            a, b = await asyncio.gather(
                *(start_side(c.data_dir.name, c, Runs(), token, stack) for c in configs)
            )
            yield a, b


def warm(side: Side) -> int:
    """Ready instances of deployments on this replica."""
    pools = side.platform.engine.pools
    return sum(
        1 for key, pool in pools.items() if key.deployment_id is not None
        for member in pool.members if member.ready
    )  # fmt: skip


async def test_one_replica_keeps_a_deployments_minimum_and_another_takes_over(
    pair: tuple[Side, Side], tmp_path: Path
) -> None:
    a, b = pair
    version = await push(a, tmp_path)
    for side in (a, b):  # both know both (each may have looked before the other joined)
        await side.platform.engine.control.refresh()
    made = await a.client.post(
        "/v1/deployments",
        json={"name": "kept", "model": "admin/slow", "version": version, "hardware": "cpu",
              "min_instances": 1, "max_instances": 2},
    )  # fmt: skip
    assert made.status_code == 200, made.text
    await b.platform.engine.control.refresh()  # b hears of the deployment
    await eventually(lambda: warm(a) + warm(b) == 1, "one warm instance")
    await asyncio.sleep(0.3)  # a second keeper would have booted by now: there is none
    assert warm(a) + warm(b) == 1
    keeper, other = (a, b) if warm(a) else (b, a)

    await keeper.stop()  # a graceful stop: its lease row goes at once
    await other.platform.engine.control.refresh()
    await eventually(lambda: warm(other) == 1, "the other replica keeping the minimum")
