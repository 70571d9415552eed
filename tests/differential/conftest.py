"""Fixtures of the differential tests: one event loop, one environment builder, and one
coglet/Modelyard ``Pair`` per package (``pair`` is parametrised indirectly with a ``Package``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelyard.runtime.environment import EnvironmentBuilder

from .packages import write_inline
from .support import EventLoopThread, Package, Pair


@pytest.fixture(scope="module")
def loop() -> Iterator[EventLoopThread]:
    thread = EventLoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="module")
def builder() -> EnvironmentBuilder:
    # The default cache ($MODELYARD_HOME/envs): the fixtures share one or two environments.
    return EnvironmentBuilder()


@pytest.fixture(scope="module")
def pair(
    request: pytest.FixtureRequest,
    loop: EventLoopThread,
    builder: EnvironmentBuilder,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pair]:
    """coglet and Modelyard started on ``request.param`` (a Package), stopped after the module."""
    package: Package = request.param
    path = package.path
    if path is None:
        path = write_inline(package.name, tmp_path_factory.mktemp(package.name))
    started = Pair(path, package.mode, builder, loop)
    yield started
    started.stop()
