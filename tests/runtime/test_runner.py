"""Runner: health statuses, stop(), queueing when every slot is busy, worker replacement.

Real worker processes on the fixtures of tests/fixtures/ (one shared environment).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fixture_support import PREDICTION_LIMIT, inputs, predict

from modelyard.runtime.events import Done, Event, Log, Started
from modelyard.runtime.runner import Health, SetupFailed, describe_exit

pytestmark = pytest.mark.asyncio(loop_scope="session")






def done(events: list[Event]) -> Done:
    assert isinstance(events[-1], Done), events
    return events[-1]


async def wait_for_log(events: AsyncIterator[Event], text: str) -> list[Event]:
    """Read events until a log line containing `text` (the prediction is then running)."""
    seen: list[Event] = []
    async for event in events:
        seen.append(event)
        if isinstance(event, Log) and text in event.text:
            return seen
        assert not isinstance(event, Done), seen
    raise AssertionError(f"no log {text!r}: {seen}")


async def wait_until(condition: Any, limit: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        assert loop.time() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


# --- health ---------------------------------------------------------------------------------


async def test_health_is_stopped_before_start_and_ready_after(runners: Any) -> None:
    runner = await runners("healthcheck")
    assert await runner.health() == Health("STOPPED")
    result = await runner.start()
    assert result.status == "succeeded" and result.error is None
    assert result.started_at <= result.completed_at
    assert runner.slots == 1
    assert await runner.health() == Health("READY")
    pid = runner.pid
    assert await runner.start() is result  # already started: same setup, same worker
    assert runner.pid == pid


async def test_setup_logs_belong_to_setup_not_to_the_first_prediction(runners: Any) -> None:
    runner = await runners("run_style")
    result = await runner.start()
    assert result.logs == "setting up the runner\n"
    events = await predict(runner, {})
    assert done(events).output == "hi runner"
    assert not any(isinstance(e, Log) for e in events)


async def test_user_healthcheck_false_is_unhealthy_and_recovers(runners: Any) -> None:
    runner = await runners("healthcheck")
    await runner.start()
    assert done(await predict(runner, {"healthy": False})).output == "healthy=False"
    assert await runner.health() == Health("UNHEALTHY", "user-defined healthcheck returned False")
    # an unhealthy worker still predicts; once healthcheck() is True again, it is READY
    assert done(await predict(runner, {"healthy": True})).status == "succeeded"
    assert await runner.health() == Health("READY")


async def test_user_healthcheck_raising_is_unhealthy(runners: Any) -> None:
    runner = await runners("healthcheck")
    await runner.start()
    assert done(await predict(runner, {"mode": "raise"})).status == "succeeded"
    health = await runner.health()
    assert health.status == "UNHEALTHY"
    assert health.error == "user-defined healthcheck failed: the GPU fell off"


async def test_async_healthcheck_runs_on_the_predictors_loop(runners: Any) -> None:
    runner = await runners("healthcheck_async")
    await runner.start()
    assert done(await predict(runner, {})).output == "same_loop=True"
    assert await runner.health() == Health("READY")


async def test_async_healthcheck_false_is_unhealthy(runners: Any) -> None:
    runner = await runners("healthcheck_async")
    await runner.start()
    assert done(await predict(runner, {"healthy": False})).status == "succeeded"
    assert await runner.health() == Health("UNHEALTHY", "user-defined healthcheck returned False")


async def test_busy_while_every_slot_is_used(runners: Any) -> None:
    runner = await runners("cancel_sync")
    await runner.start()
    events = runner.predict(inputs(runner, {"seconds": 60}), prediction_id="long")
    try:
        seen = await asyncio.wait_for(wait_for_log(events, "started"), PREDICTION_LIMIT)
        assert isinstance(seen[0], Started)
        assert await runner.health() == Health("BUSY")
        assert await runner.cancel("long")
        rest = [event async for event in events]
    finally:
        await events.aclose()
    assert done(rest).status == "canceled"
    assert await runner.health() == Health("READY")


async def test_async_runner_is_busy_only_when_all_four_slots_are_used(runners: Any) -> None:
    runner = await runners("async_concurrency")
    await runner.start()
    assert runner.slots == 4
    streams = [
        runner.predict(inputs(runner, {"seconds": 60, "tag": str(i)}), prediction_id=f"p{i}")
        for i in range(4)
    ]
    try:
        for stream in streams[:3]:
            assert isinstance(await stream.__anext__(), Started)
        assert await runner.health() == Health("READY")
        assert isinstance(await streams[3].__anext__(), Started)
        assert await runner.health() == Health("BUSY")
        for i in range(4):
            assert await runner.cancel(f"p{i}")
        results = [done([e async for e in stream]) for stream in streams]
    finally:
        for stream in streams:
            await stream.aclose()
    assert [r.status for r in results] == ["canceled"] * 4
    assert await runner.health() == Health("READY")


async def test_setup_failed(runners: Any) -> None:
    runner = await runners("setup_failure")
    with pytest.raises(SetupFailed, match="^weights file is corrupt$"):
        await runner.start()
    assert await runner.health() == Health("SETUP_FAILED", "weights file is corrupt")
    assert runner.setup_result is not None
    assert runner.setup_result.status == "failed"
    assert "loading the model" in runner.setup_result.logs
    result = done(await predict(runner, {"x": 1}))
    assert result.status == "failed" and result.error == "setup failed: weights file is corrupt"


async def test_health_while_starting(runners: Any) -> None:
    runner = await runners("setup_slow", setup_timeout=30)
    start = asyncio.ensure_future(runner.start())
    try:
        await wait_until(lambda: runner.state == "STARTING")
        assert await runner.health() == Health("STARTING")
    finally:
        start.cancel()
        await asyncio.gather(start, return_exceptions=True)


async def test_dead_idle_worker_is_defunct_and_replaced_by_the_next_prediction(runners: Any) -> None:
    runner = await runners("cancel_sync")
    await runner.start()
    old = runner.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    await wait_until(lambda: runner.state == "DEFUNCT")
    assert (await runner.health()).status == "DEFUNCT"
    result = done(await predict(runner, {"seconds": 0}))
    assert result.status == "succeeded"
    assert result.output == runner.pid != old
    assert await runner.health() == Health("READY")


# --- stop -----------------------------------------------------------------------------------


async def test_stop_ends_the_worker(runners: Any) -> None:
    runner = await runners("cancel_sync")
    await runner.start()
    pid = runner.pid
    assert pid is not None
    await runner.stop()
    assert runner.state == "STOPPED"
    assert runner.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert await runner.health() == Health("STOPPED")
    await runner.stop()  # stopping twice is harmless


async def test_a_stopped_runner_starts_again_on_predict(runners: Any) -> None:
    runner = await runners("cancel_sync")
    await runner.start()
    first = done(await predict(runner, {"seconds": 0})).output
    await runner.stop()
    result = done(await predict(runner, {"seconds": 0}))
    assert result.status == "succeeded" and result.output != first


async def test_stop_during_a_prediction_fails_it(runners: Any) -> None:
    runner = await runners("cancel_async")
    await runner.start()
    events = runner.predict(inputs(runner, {"seconds": 60}))
    try:
        await asyncio.wait_for(wait_for_log(events, "started"), PREDICTION_LIMIT)
        stopping = asyncio.ensure_future(runner.stop())
        rest = await asyncio.wait_for(_drain(events), PREDICTION_LIMIT)
        await stopping
    finally:
        await events.aclose()
    assert done(rest).status == "failed"
    assert runner.state == "STOPPED"


async def test_stop_during_setup_leaves_the_runner_stopped(runners: Any) -> None:
    runner = await runners("setup_slow")
    start = asyncio.ensure_future(runner.start())
    await wait_until(lambda: runner.state == "STARTING" and runner.pid is not None)
    await runner.stop()
    outcome = (await asyncio.gather(start, return_exceptions=True))[0]
    assert isinstance(outcome, SetupFailed)
    assert runner.state == "STOPPED"
    assert await runner.health() == Health("STOPPED")


async def _drain(events: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in events]


# --- queueing -------------------------------------------------------------------------------


async def test_predictions_queue_when_the_only_slot_is_busy(runners: Any) -> None:
    runner = await runners("cancel_sync")
    await runner.start()
    results = await asyncio.gather(*(predict(runner, {"seconds": 0.2}) for _ in range(3)))
    assert [done(r).status for r in results] == ["succeeded"] * 3  # none refused
    assert len({done(r).output for r in results}) == 1  # one worker, one at a time
    for events in results:
        logs = "".join(e.text for e in events if isinstance(e, Log))
        assert logs == "started\nfinished\n"  # no prediction saw another's logs


async def test_cancel_of_a_queued_prediction(runners: Any) -> None:
    runner = await runners("cancel_sync")
    await runner.start()
    running = runner.predict(inputs(runner, {"seconds": 60}), prediction_id="running")
    queued = None
    try:
        await asyncio.wait_for(wait_for_log(running, "started"), PREDICTION_LIMIT)
        queued = asyncio.ensure_future(predict(runner, {"seconds": 60}, prediction_id="queued"))
        for _ in range(10):
            await asyncio.sleep(0)  # let it reach the wait for the slot
        assert await runner.cancel("queued")
        assert await runner.cancel("running")
        await _drain(running)
        events = await asyncio.wait_for(queued, PREDICTION_LIMIT)
    finally:  # leave the worker idle, so that stop() need not kill it
        if queued is not None and not queued.done():
            queued.cancel()
            await asyncio.gather(queued, return_exceptions=True)
        await runner.cancel("running")
        await running.aclose()
    assert done(events).status == "canceled"
    assert not any(isinstance(e, Log) for e in events)  # it never ran


async def test_async_predictions_beyond_the_slots_wait(runners: Any) -> None:
    runner = await runners("async_concurrency")
    await runner.start()
    results = [
        done(events)
        for events in await asyncio.gather(
            *(predict(runner, {"seconds": 0.3, "tag": str(i)}) for i in range(6))
        )
    ]
    assert [r.status for r in results] == ["succeeded"] * 6
    intervals = [(r.output["start"], r.output["end"]) for r in results]
    # never more than 4 at once in the worker
    for start, _ in intervals:
        assert sum(1 for s, e in intervals if s <= start < e) <= 4


# --- describe_exit --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (None, "it closed its connection"),
        (0, "exited with code 0"),
        (3, "exited with code 3"),
        (-signal.SIGSEGV, "killed by SIGSEGV (segmentation fault)"),
        (-signal.SIGKILL, "killed by SIGKILL (the system may have run out of memory)"),
        (-signal.SIGTERM, "killed by SIGTERM"),
    ],
)
async def test_describe_exit(code: int | None, text: str) -> None:
    assert describe_exit(code) == text
