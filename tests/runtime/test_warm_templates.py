"""Warm templates (runtime/templates.py) and the boot's phases, on real worker processes (in a
sandbox where bubblewrap works, as the engine runs them): a second instance of a version starts
from a worker that already imported what setup() imported, in a sandbox of its own; templates
are bounded by count and given back when idle."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from modelyard.runtime import templates as templates_module
from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.runtime.events import Done
from modelyard.runtime.local import LocalModel
from modelyard.runtime.templates import Templates

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(240)]

COG_YAML = 'build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n'
#: setup() imports `wave` (standard library, outside the package): a template preloads it.
PREDICTOR = """
import os, sys
from cog import BasePredictor
import helper  # the model's own module: never preloaded

class Predictor(BasePredictor):
    def setup(self) -> None:
        self.preloaded = "wave" in sys.modules
        import wave
        print("setting up {tag}")

    def predict(self) -> dict:
        seen = os.path.exists(os.path.join(os.environ.get("TMPDIR", "/tmp"), "mark"))
        with open(os.path.join(os.environ.get("TMPDIR", "/tmp"), "mark"), "w") as f:
            f.write("x")
        return {{"preloaded": self.preloaded, "saw_mark": seen, "tag": "{tag}"}}
"""
WAIT = 120.0  # seconds, at most, for a template to import
SLOW = """
import time
from cog import BasePredictor

class Predictor(BasePredictor):
    def predict(self, seconds: float = 0.0) -> str:
        time.sleep(seconds)
        return "done"
"""


def package(folder: Path, tag: str) -> Path:
    folder.mkdir()
    (folder / "cog.yaml").write_text(COG_YAML)
    (folder / "predict.py").write_text(PREDICTOR.format(tag=tag))
    (folder / "helper.py").write_text("VALUE = 1\n")
    return folder


@pytest_asyncio.fixture(loop_scope="session")
async def templates() -> AsyncIterator[Templates]:
    made = Templates(count=1)
    yield made
    await made.close()


@pytest_asyncio.fixture(loop_scope="session")
async def models(env_builder: EnvironmentBuilder) -> AsyncIterator[Callable[..., Any]]:
    """`await models(package, templates, **options)`: a started LocalModel, stopped at the end."""
    made: list[LocalModel] = []

    async def start(folder: Path, templates: Templates, **options: Any) -> LocalModel:
        model = LocalModel(
            folder, builder=env_builder, sandbox=None, templates=templates, **options
        )
        made.append(model)
        logs: list[str] = []
        await asyncio.wait_for(model.start(logs.append), WAIT)
        model.boot_log = logs  # type: ignore[attr-defined]
        return model

    yield start
    for model in made:
        await model.stop()
        await model.discard_outputs()


async def output(model: LocalModel) -> Any:
    async def run() -> Any:
        events = [event async for event in model.predict({})]
        done = events[-1]
        assert isinstance(done, Done) and done.status == "succeeded", done
        return done.output

    return await asyncio.wait_for(run(), 60)


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"not {what} after {WAIT:g} s"
        await asyncio.sleep(0.05)


def warm(templates: Templates) -> bool:
    return any(row.state == "warm" for row in templates.stats())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_second_instance_starts_from_a_template_in_its_own_sandbox(
    tmp_path: Path, templates: Templates, models: Callable[..., Any]
) -> None:
    folder = package(tmp_path / "model", "a")
    first = await models(folder, templates)
    assert first.runner is not None and not first.runner.from_template
    assert set(first.boot_phases) == {"environment_time", "import_time", "setup_time"}
    assert all(value >= 0 for value in first.boot_phases.values())
    assert any(line.startswith("Boot: environment ") for line in first.boot_log)
    assert "wave" in first.runner.modules and "helper" not in first.runner.modules
    assert await output(first) == {"preloaded": False, "saw_mark": False, "tag": "a"}

    await until(lambda: warm(templates), "warm")
    [row] = templates.stats()
    assert row.memory_bytes > 0 and row.pid is not None

    second = await models(folder, templates)
    assert second.runner is not None and second.runner.from_template
    assert any("from a warm template" in line for line in second.boot_log)
    assert any("setting up a" in line for line in second.boot_log)  # setup() ran for it
    # It imported ahead, and (in a sandbox) has a scratch of its own: no file of the first.
    shared_tmp = first.sandbox is None
    assert await output(second) == {"preloaded": True, "saw_mark": shared_tmp, "tag": "a"}
    assert first.sandbox != second.sandbox
    # Both instances answer, each on its own worker.
    assert first.runner.pid != second.runner.pid
    assert (await output(first))["saw_mark"] is True


async def test_a_template_waits_for_a_pause_of_the_instance_beside_it(
    tmp_path: Path,
    templates: Templates,
    models: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its imports would slow the predictions running beside it: it starts once the instance
    that made it has been quiet a moment, and an instance that starts before then boots cold."""
    monkeypatch.setattr(templates_module, "QUIET", 1.0)
    folder = tmp_path / "slow"
    folder.mkdir()
    (folder / "cog.yaml").write_text(COG_YAML)
    (folder / "predict.py").write_text(SLOW)
    first = await models(folder, templates)

    async def run(seconds: float) -> list[Any]:
        return [event async for event in first.predict({"seconds": seconds})]

    busy = asyncio.ensure_future(run(4.0))
    await asyncio.sleep(2.5)  # past QUIET, and the prediction still runs
    assert [row.state for row in templates.stats()] == ["waiting"]
    second = await models(folder, templates)
    assert second.runner is not None and not second.runner.from_template
    done = (await asyncio.wait_for(busy, 60))[-1]
    assert isinstance(done, Done) and done.status == "succeeded"
    await until(lambda: warm(templates), "warm")  # the second instance's, once it was quiet


async def test_templates_are_bounded_and_given_back_when_idle(
    tmp_path: Path, templates: Templates, models: Callable[..., Any]
) -> None:
    one = package(tmp_path / "one", "one")
    two = package(tmp_path / "two", "two")
    await models(one, templates, template_idle_timeout=60)
    await until(lambda: warm(templates), "warm")
    [row] = templates.stats()
    old_pid = row.pid
    assert old_pid is not None
    await models(two, templates, template_idle_timeout=0.5)
    # count=1: the template of `one` (used least recently) was given back for `two`'s.
    await until(lambda: not alive(old_pid), "given back")
    assert [row.name for row in templates.stats()] == ["two/predict.py:Predictor"]
    [row] = templates.stats()
    assert row.pid is not None or row.state in ("waiting", "warming")
    await until(lambda: not templates.stats(), "idle")  # `two`'s after its idle timeout
    if row.pid is not None:
        await until(lambda: not alive(row.pid), "stopped")


async def test_a_setup_that_changes_what_imports_see_gets_no_preload(
    tmp_path: Path, templates: Templates, models: Callable[..., Any]
) -> None:
    folder = package(tmp_path / "model", "env")
    source = (folder / "predict.py").read_text()
    # setup() sets a variable before its import: a template that imported first would differ.
    changed = source.replace("import wave\n", "os.environ['CHOSEN'] = 'x'\n        import wave\n")
    (folder / "predict.py").write_text(changed)
    await models(folder, templates)
    await until(lambda: warm(templates), "warm")
    second = await models(folder, templates)  # the template did not agree: a cold boot
    assert second.runner is not None and not second.runner.from_template
    await until(lambda: warm(templates), "warm")
    third = await models(folder, templates)  # a template that preloads nothing
    assert third.runner is not None and third.runner.from_template
    assert (await output(third))["preloaded"] is False


async def test_no_templates_when_turned_off(tmp_path: Path, models: Callable[..., Any]) -> None:
    off = Templates(count=0)
    folder = package(tmp_path / "model", "off")
    model = await models(folder, off)
    assert not off.stats()
    again = await models(folder, off)
    assert again.runner is not None and not again.runner.from_template
    assert await output(model) == await output(again)
    await off.close()
