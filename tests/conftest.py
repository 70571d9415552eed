"""Shared pytest fixtures: one persistent environment cache (`env_builder`), started fixture
models (`models`) and a local HTTP server for URL inputs (`http_server`); helpers are in
`fixture_support.py`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_asyncio
from fixture_support import FIXTURES, ModelPool, serving_folder

from modelyard.runtime.environment import EnvironmentBuilder


@pytest.fixture(scope="session")
def env_builder() -> EnvironmentBuilder:
    """Environments are cached across sessions: `$MODELYARD_HOME/envs` or the user cache."""
    return EnvironmentBuilder()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def models(env_builder: EnvironmentBuilder) -> Any:
    pool = ModelPool(env_builder)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="session")
def http_server() -> Iterator[str]:
    """Base URL of a local HTTP server serving `tests/fixtures/` (as `{{HTTP}}/<fixture>/...`)."""
    with serving_folder(FIXTURES) as base:
        yield base
