"""Fixtures of the runtime tests: runners on real worker processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from fixture_support import make_runner

from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.runtime.runner import Runner


@pytest_asyncio.fixture(loop_scope="session")
async def runners(env_builder: EnvironmentBuilder) -> AsyncIterator[Any]:
    """`await runners("fixture", **spec_options)`: a runner, stopped at the end of the test."""
    made: list[Runner] = []

    async def make(name: str, **options: Any) -> Runner:
        runner = await make_runner(env_builder, name, **options)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        await runner.stop()
