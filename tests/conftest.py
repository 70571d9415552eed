"""Shared pytest fixtures: one persistent environment cache (`env_builder`), started fixture
models (`models`) and a local HTTP server for URL inputs (`http_server`); helpers are in
`fixture_support.py`.

The suite runs on two pytest-xdist workers that take whole files (`-n 2 --dist loadfile`, in
pyproject.toml). What the fixtures share between workers is safe to share: the environment cache
builds each environment once under a file lock, live servers take a free port each (and another if
it was taken meanwhile) and a data folder under the worker's own temporary directory, and the
PostgreSQL tests each make a schema of their own. The slowest files are handed out first (below).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_asyncio
from fixture_support import FIXTURES, ModelPool, serving_folder

from modelyard.runtime.environment import EnvironmentBuilder

#: The files that take longest (trainings, the whole catalog on a live server, real models, many
#: CLI subprocesses), the slowest first: from one to five minutes each on the 2-core CI machine.
#: Files are handed to the workers in collection order (`--no-loadscope-reorder`), so these go
#: first: a long file that started last would keep one worker busy while the other sat idle.
#: Every other file follows in the usual order.
SLOW_FILES = (
    "tests/e2e/test_catalog_trainers.py",
    "tests/cli/test_cli.py",
    "tests/e2e/test_starter_catalog.py",
    "tests/cluster/test_two_machines.py",
    "tests/differential/test_fixture_cases.py",
    "tests/e2e/test_engine.py",
    "tests/models/test_text_generation.py",
    "tests/e2e/test_web_browser.py",
    "tests/e2e/test_files.py",
    "tests/models/test_text_classifier.py",
    "tests/cluster/test_ray_backend.py",
    "tests/e2e/test_hangs.py",
    "tests/e2e/test_sandbox_limits.py",
    "tests/e2e/test_schemathesis.py",
    "tests/e2e/test_sandbox.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


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
