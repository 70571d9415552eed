"""Helpers for running the Cog fixtures of `tests/fixtures/` through `LocalModel` (real uv
environments, real worker processes); the pytest fixtures that use them are in conftest.py.

Import these from `fixture_support`, not from `conftest`: several conftest.py files exist and only
one of them can be the module named `conftest`.

- `env_builder` (session): an `EnvironmentBuilder` on the default cache (`$MODELYARD_HOME/envs` when
  set, else `~/.cache/modelyard/envs`), so environments survive across test sessions.
- `models` (module): a `ModelPool` that starts one worker per fixture on first use and keeps it for
  the module, stopping them all at the end.
- `run_fixture(builder, name, input)`: validate → start → collect events → stop, for one-off runs.
- `collect(model, input)`: one prediction on an already started model, as a `Result`.
- `http_server` (session): a local HTTP server serving `tests/fixtures/` for URL inputs; any
  other folder can be served the same way with `serving_folder(folder)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modelyard.cogspec.config import load_config
from modelyard.cogspec.inputs import validate_input
from modelyard.cogspec.schema import predictor_schema
from modelyard.runtime.environment import EnvironmentBuilder, spec_from_config
from modelyard.runtime.events import Done, Event, Log, Metric, Output, OutputFile
from modelyard.runtime.local import LocalModel
from modelyard.runtime.runner import Runner, RunnerSpec, SetupFailed

FIXTURES = Path(__file__).parent / "fixtures"
HTTP_PLACEHOLDER = "{{HTTP}}"
#: No single prediction in the fixtures takes long; a hang fails the test instead of the session.
PREDICTION_LIMIT = 60.0


@dataclass
class Result:
    """What one prediction ended with, and every event it produced on the way."""

    status: str
    output: Any = None
    error: str | None = None
    logs: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    predict_time: float | None = None

    @property
    def items(self) -> list[Any]:
        """The values of the streamed `Output` events, in order."""
        return [e.value for e in self.events if isinstance(e, Output)]

    @property
    def metric_events(self) -> list[Metric]:
        return [e for e in self.events if isinstance(e, Metric)]


def fixture_dir(name: str) -> Path:
    path = FIXTURES / name
    assert (path / "cog.yaml").is_file(), f"no fixture {name!r}"
    return path


def fixture_names() -> list[str]:
    return sorted(p.parent.name for p in FIXTURES.glob("*/cog.yaml"))


def load_cases(name: str) -> list[dict[str, Any]]:
    return json.loads((fixture_dir(name) / "cases.json").read_text())


def all_cases(known_bugs: dict[str, str] | None = None) -> list[Any]:
    """`pytest.param(fixture, case, id="fixture/case")` for every case of every fixture.

    `known_bugs` maps `"fixture/case"` to the reason of a strict xfail (a bug in src/ the case
    shows; the mark comes off when the bug is fixed).
    """
    known_bugs = known_bugs or {}
    params = []
    for name in fixture_names():
        for case in load_cases(name):
            key = f"{name}/{case['name']}"
            marks = (
                [pytest.mark.xfail(reason=known_bugs[key], strict=True)]
                if key in known_bugs
                else []
            )
            params.append(pytest.param(name, case, id=key, marks=marks))
    unknown = set(known_bugs) - {p.id for p in params}
    assert not unknown, f"known_bugs names no case: {unknown}"
    return params


def substitute(value: Any, http_base: str | None) -> Any:
    """Replace the `{{HTTP}}` placeholder of cases.json with the test server's base URL."""
    if isinstance(value, str) and HTTP_PLACEHOLDER in value:
        assert http_base is not None, "this case needs the http_server fixture"
        return value.replace(HTTP_PLACEHOLDER, http_base)
    if isinstance(value, list):
        return [substitute(v, http_base) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, http_base) for k, v in value.items()}
    return value


def file_contents(value: Any) -> list[bytes]:
    """The bytes of every `OutputFile` inside an output value, in output order."""
    if isinstance(value, OutputFile):
        return [value.path.read_bytes()]
    if isinstance(value, list):
        return [b for v in value for b in file_contents(v)]
    if isinstance(value, dict):
        return [b for v in value.values() for b in file_contents(v)]
    return []


async def collect(
    model: LocalModel,
    payload: dict[str, Any] | None,
    *,
    context: dict[str, str] | None = None,
    timeout: float | None = None,
    prediction_id: str | None = None,
    cancel_after_log: str | None = None,
    on_event: Callable[[Event], Awaitable[None] | None] | None = None,
    limit: float = PREDICTION_LIMIT,
) -> Result:
    """Validate `payload` and run one prediction on a started model; never hangs past `limit` s.

    `cancel_after_log`: cancel the prediction as soon as a log line containing that text arrives.
    `on_event`: called with each event as it arrives (may be a coroutine function).
    """
    inputs = model.validate(payload)
    prediction_id = prediction_id or f"test-{id(inputs):x}-{asyncio.get_running_loop().time()}"
    events: list[Event] = []
    logs: list[str] = []

    async def run() -> None:
        canceled = False
        async for event in model.predict(
            inputs, prediction_id=prediction_id, context=context, timeout=timeout
        ):
            events.append(event)
            if isinstance(event, Log):
                logs.append(event.text)
                if cancel_after_log and not canceled and cancel_after_log in event.text:
                    canceled = True
                    assert await model.cancel(prediction_id)
            if on_event is not None:
                maybe = on_event(event)
                if asyncio.iscoroutine(maybe):
                    await maybe

    await asyncio.wait_for(run(), limit)
    assert events and isinstance(events[-1], Done), f"no Done event: {events}"
    done = events[-1]
    return Result(
        status=done.status,
        output=done.output,
        error=done.error,
        logs="".join(logs),
        metrics=done.metrics,
        events=events,
        predict_time=done.predict_time,
    )


async def run_fixture(
    builder: EnvironmentBuilder,
    name: str,
    payload: dict[str, Any] | None = None,
    *,
    mode: str = "predict",
    weights: str | None = None,
    setup_timeout: float | None = None,
    **predict_options: Any,
) -> Result:
    """Run one prediction of fixture `name` on a worker of its own: validate → start → collect → stop.

    A failed setup gives a `failed` Result whose error is the setup error and whose logs are
    setup's logs.
    """
    model = LocalModel(
        fixture_dir(name), mode=mode, builder=builder, weights=weights, setup_timeout=setup_timeout
    )
    model.validate(payload)
    try:
        try:
            await model.start()
        except SetupFailed as exc:
            setup = model.runner.setup_result if model.runner else None
            return Result("failed", error=str(exc), logs=setup.logs if setup else "")
        return await collect(model, payload, **predict_options)
    finally:
        await model.stop()


@contextlib.asynccontextmanager
async def started_model(
    package: Path, builder: EnvironmentBuilder, **options: Any
) -> AsyncIterator[LocalModel]:
    """The Cog package at `package`, started (options go to `LocalModel`), stopped afterwards."""
    model = LocalModel(package, builder=builder, **options)
    try:
        await model.start()
        yield model
    finally:
        await model.stop()


class ModelPool:
    """Started models by (fixture, mode, weights, setup_timeout), shared by the tests of a module."""

    def __init__(self, builder: EnvironmentBuilder) -> None:
        self.builder = builder
        self._models: dict[tuple[Any, ...], LocalModel] = {}

    async def get(
        self,
        name: str,
        *,
        mode: str = "predict",
        weights: str | None = None,
        setup_timeout: float | None = None,
    ) -> LocalModel:
        """The model, started (a failed setup is left for the prediction to report)."""
        key = (name, mode, weights, setup_timeout)
        model = self._models.get(key)
        if model is None:
            model = LocalModel(
                fixture_dir(name),
                mode=mode,
                builder=self.builder,
                weights=weights,
                setup_timeout=setup_timeout,
            )
            self._models[key] = model
            try:
                await model.start()
            except SetupFailed:
                pass
        return model

    async def close(self) -> None:
        for model in self._models.values():
            await model.stop()
        self._models.clear()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serving_folder(folder: Path) -> Iterator[str]:
    """A plain HTTP server on loopback serving `folder` until the block ends; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# Runners made for a fixture, and the schema each validates its inputs against.
SCHEMAS: dict[int, dict[str, Any]] = {}


async def make_runner(builder: EnvironmentBuilder, name: str, **options: Any) -> Runner:
    """A Runner for a fixture (not started); `inputs()` validates against its schema."""
    package = fixture_dir(name)
    config = load_config(package)
    env = await asyncio.to_thread(builder.ensure, spec_from_config(config), package)
    spec = RunnerSpec(
        package_dir=package,
        python=env.python,
        ref=config.predict or "",
        environment=config.environment,
        max_concurrency=config.concurrency_max if config.concurrency_max > 1 else None,
        **options,
    )
    runner = Runner(spec)
    SCHEMAS[id(runner)] = predictor_schema(package, config)
    return runner


def inputs(runner: Runner, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload validated as the API would (defaults filled in): what Runner.predict takes."""
    return validate_input(SCHEMAS[id(runner)], payload)


async def predict(runner: Runner, payload: dict[str, Any], **options: Any) -> list[Event]:
    """Every event of one prediction of `payload` (validated first), bounded in time."""

    async def run() -> list[Event]:
        return [event async for event in runner.predict(inputs(runner, payload), **options)]

    return await asyncio.wait_for(run(), PREDICTION_LIMIT)
