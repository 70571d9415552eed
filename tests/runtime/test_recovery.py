"""The runner recovers from what goes wrong around a prediction, and never leaves one hanging."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from fixture_support import PREDICTION_LIMIT, collect, fixture_dir, started_model

from modelyard.runtime.events import Done, Log, Started
from modelyard.runtime.local import LocalModel
from modelyard.runtime.runner import Runner, RunnerSpec


async def test_a_prediction_queued_behind_a_crash_runs_on_a_fresh_worker(env_builder: Any) -> None:
    async with started_model(fixture_dir("recovery"), env_builder) as model:
        first_pid = (await collect(model, {"action": "pid"})).output
        crashing = asyncio.ensure_future(
            collect(model, {"action": "sleep_then_exit", "seconds": 1})
        )
        await asyncio.sleep(0.2)  # let it take the only slot
        queued = await collect(model, {"action": "pid"})
        crashed = await crashing
        assert crashed.status == "failed"
        assert crashed.error == "The worker process died: exited with code 5"
        assert queued.status == "succeeded" and queued.output != first_pid
        assert (await collect(model, {"action": "pid"})).output == queued.output


async def test_a_child_that_outlives_the_worker_does_not_hide_its_death(env_builder: Any) -> None:
    async with started_model(fixture_dir("recovery"), env_builder) as model:
        result = await collect(model, {"action": "orphan_then_exit"})
        assert result.status == "failed"
        assert result.error == "The worker process died: exited with code 4"
        assert (await collect(model, {"action": "pid"})).status == "succeeded"


async def test_a_bad_metric_fails_the_prediction_and_the_worker_lives_on(env_builder: Any) -> None:
    async with started_model(fixture_dir("recovery"), env_builder) as model:
        before = (await collect(model, {"action": "pid"})).output
        for action in ("bad_metric", "clashing_metrics"):
            assert (await collect(model, {"action": action})).status == "failed"
        assert (await collect(model, {"action": "pid"})).output == before


async def test_an_abandoned_stream_cancels_its_prediction(env_builder: Any) -> None:
    async with started_model(fixture_dir("recovery"), env_builder) as model:
        pid = (await collect(model, {"action": "pid"})).output
        stream = model.predict(
            model.validate({"action": "sleep", "seconds": 600}), prediction_id="gone"
        )
        async for event in stream:
            if isinstance(event, Log) and "action sleep" in event.text:
                break
        await stream.aclose()  # the caller walks away mid-prediction
        # Without the cancel, this would wait ten minutes for the slot (collect gives up first).
        after = await collect(model, {"action": "pid"})
        assert after.status == "succeeded" and after.output == pid


def slow_setup(folder: Path, seconds: int) -> Path:
    """The `setup_slow` fixture, copied under `folder`, with a setup of `seconds` instead of 60."""
    package = folder / "setup_slow"
    shutil.copytree(fixture_dir("setup_slow"), package)
    predict = package / "predict.py"
    source = predict.read_text()
    assert "time.sleep(60)" in source
    predict.write_text(source.replace("time.sleep(60)", f"time.sleep({seconds})"))
    return package


async def test_a_cancel_during_the_cold_boot_is_not_lost(env_builder: Any, tmp_path: Path) -> None:
    # A setup of 5 s, not the fixture's 60: time enough to cancel during it (the cancel comes as
    # soon as the worker is starting), and the prediction waits for no more than the setup.
    model = LocalModel(slow_setup(tmp_path, 5), builder=env_builder)
    environment = await model.ensure_environment()
    runner = Runner(RunnerSpec(model.package_dir, environment.python, model.ref))

    async def run() -> list[Any]:
        return [event async for event in runner.predict({}, prediction_id="cold")]

    try:
        task = asyncio.ensure_future(run())
        while runner.state != "STARTING":
            await asyncio.sleep(0.05)
        assert await runner.cancel("cold")
        events = await asyncio.wait_for(task, PREDICTION_LIMIT + 10)
        assert events == [Done("canceled")]
    finally:
        await runner.stop()


async def test_a_caller_canceled_during_setup_does_not_restart_it(env_builder: Any) -> None:
    model = LocalModel(fixture_dir("recovery"), builder=env_builder)
    environment = await model.ensure_environment()
    runner = Runner(RunnerSpec(model.package_dir, environment.python, model.ref))
    try:
        first = asyncio.ensure_future(runner.start())
        while runner.pid is None:
            await asyncio.sleep(0.01)
        pid = runner.pid
        first.cancel()  # e.g. a client that hung up during the cold boot
        await runner.start()
        assert runner.pid == pid and runner.state == "READY"
    finally:
        await runner.stop()


async def test_ids_of_running_predictions_are_not_reused(env_builder: Any) -> None:
    async with started_model(fixture_dir("recovery"), env_builder) as model:
        running = model.predict(
            model.validate({"action": "sleep", "seconds": 1}), prediction_id="same"
        )
        assert isinstance(await running.__anext__(), Started)
        twin = [e async for e in model.predict(model.validate({}), prediction_id="same")]
        assert twin == [Done("failed", error="a prediction with id same is already running")]
        assert [e async for e in running][-1].status == "succeeded"


async def test_cog_setup_timeout_from_cog_yaml_bounds_setup(env_builder: Any) -> None:
    async with started_model(fixture_dir("cog_environment"), env_builder) as model:
        assert model.runner is not None and model.runner.spec.setup_timeout == 30.0
