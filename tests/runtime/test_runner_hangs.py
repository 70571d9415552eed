"""Nothing hangs (issue 13): cancel and timeouts end a prediction stuck where Python cannot reach
it (a sleep, a C call, a predictor that swallows the cancel, an async predictor that blocks its
loop); a frame that cannot travel fails its prediction, never the slot; a failing setup runs once
for everything waiting on it and backs off.

Real worker processes on the packages of tests/e2e/packages/. No test asserts a duration; every
wait has a bound (`collect`'s limit).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fixture_support import collect, started_model

from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.runtime.events import Log, Output
from modelyard.runtime.local import LocalModel
from modelyard.runtime.runner import SetupFailed
from modelyard.runtime.waiting import Backoff

pytestmark = pytest.mark.asyncio(loop_scope="session")

PACKAGES = Path(__file__).parents[1] / "e2e" / "packages"
LIMIT = 60.0  # seconds any one prediction here may take before the test fails


@pytest.fixture(scope="module")
async def stuck(env_builder: EnvironmentBuilder) -> AsyncIterator[LocalModel]:
    async with started_model(PACKAGES / "stuck", env_builder) as model:
        yield model


async def _cancel_when_stuck(model: LocalModel, prediction_id: str, event: Any) -> None:
    if isinstance(event, Log) and "stuck in" in event.text:
        assert await model.cancel(prediction_id)


async def _canceled_then_next_runs(model: LocalModel, payload: dict[str, Any]) -> None:
    before = await collect(model, {"how": "whoami"})
    prediction_id = f"stuck-{payload}-{id(model)}"
    result = await collect(
        model,
        payload,
        prediction_id=prediction_id,
        on_event=lambda event: _cancel_when_stuck(model, prediction_id, event),
        limit=LIMIT,
    )
    assert (result.status, result.error) == ("canceled", None)
    assert "did not stop within" in result.logs  # says why its worker was restarted
    after = await collect(model, {"how": "whoami"})
    assert after.status == "succeeded" and after.output != before.output  # a fresh worker


@pytest.mark.parametrize("how", ["sleep", "c_sleep", "ignore"])
async def test_cancel_ends_a_sync_prediction_stuck_out_of_reach(
    stuck: LocalModel, how: str
) -> None:
    await _canceled_then_next_runs(stuck, {"how": how})


@pytest.mark.parametrize("how", ["sleep", "c_sleep"])
async def test_cancel_ends_an_async_prediction_that_blocks_its_loop(
    env_builder: EnvironmentBuilder, how: str
) -> None:
    async with started_model(PACKAGES / "stuck_async", env_builder) as model:
        await _canceled_then_next_runs(model, {"how": how})


async def test_cancel_ends_a_stuck_iterator(env_builder: EnvironmentBuilder) -> None:
    async with started_model(PACKAGES / "stuck_stream", env_builder) as model:
        first = await collect(model, {})
        prediction_id = "stuck-stream"
        result = await collect(
            model,
            {"stuck": True},
            prediction_id=prediction_id,
            on_event=lambda event: _cancel_when_stuck(model, prediction_id, event),
            limit=LIMIT,
        )
        assert result.status == "canceled"
        assert [e.value for e in result.events if isinstance(e, Output)] == result.items
        assert len(result.items) == 1  # what it yielded before it got stuck is kept
        after = await collect(model, {})
        assert after.status == "succeeded" and after.items != first.items


@pytest.mark.parametrize("how", ["sleep", "c_sleep", "ignore"])
async def test_the_runner_timeout_ends_a_stuck_prediction(stuck: LocalModel, how: str) -> None:
    before = await collect(stuck, {"how": "whoami"})
    result = await collect(stuck, {"how": how}, timeout=1, limit=LIMIT)
    assert (result.status, result.error) == ("failed", "Prediction timed out after 1 seconds")
    after = await collect(stuck, {"how": "whoami"})
    assert after.status == "succeeded" and after.output != before.output


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("surrogate", "output cannot be encoded as JSON"),
        ("huge", "the output is too large to send to the runner"),
    ],
)
async def test_an_output_that_cannot_travel_fails_only_its_prediction(
    stuck: LocalModel, how: str, error: str
) -> None:
    before = await collect(stuck, {"how": "whoami"})
    result = await collect(stuck, {"how": how}, limit=LIMIT)
    assert result.status == "failed" and result.error is not None and error in result.error
    after = await collect(stuck, {"how": "whoami"})
    assert (after.status, after.output) == ("succeeded", before.output)  # the same worker


@pytest.mark.parametrize("package", ["stuck", "stuck_async"])
async def test_a_log_that_cannot_be_encoded_does_not_lose_the_end(
    env_builder: EnvironmentBuilder, package: str
) -> None:
    async with started_model(PACKAGES / package, env_builder) as model:
        before = await collect(model, {"how": "whoami"})
        result = await collect(model, {"how": "surrogate_log"}, limit=LIMIT)
        assert (result.status, result.output) == ("succeeded", "logged")
        assert "half a line \ufffd" in result.logs
        after = await collect(model, {"how": "whoami"})
        assert (after.status, after.output) == ("succeeded", before.output)


async def test_an_input_that_cannot_be_sent_fails_only_its_prediction(stuck: LocalModel) -> None:
    assert stuck.runner is not None
    before = await collect(stuck, {"how": "whoami"})
    events = [e async for e in stuck.runner.predict({"how": "\ud800"})]
    done = events[-1]
    assert done.status == "failed" and "cannot be sent to the worker" in str(done.error)  # type: ignore[union-attr]
    huge = [e async for e in stuck.runner.predict({"how": "x" * (65 * 1024 * 1024)})]
    assert "too large to send to the worker" in str(huge[-1].error)  # type: ignore[union-attr]
    after = await collect(stuck, {"how": "whoami"})
    assert (after.status, after.output) == ("succeeded", before.output)


# --- setup failures -------------------------------------------------------------------------


async def test_a_failing_setup_runs_once_for_everything_waiting_and_backs_off(
    env_builder: EnvironmentBuilder,
) -> None:
    setup_logs: list[str] = []
    model = LocalModel(PACKAGES / "bad_setup", builder=env_builder)

    def setups() -> int:
        return "".join(setup_logs).count("setup ran")

    try:
        with pytest.raises(SetupFailed, match="the weights are missing"):
            await model.start(setup_logs.append)
        assert model.runner is not None
        model.runner.setup_backoff = Backoff(first=1.0, cap=1.0)  # short, for this test
        model.runner.setup_backoff.failed("the weights are missing")
        results = await asyncio.gather(*(collect(model, {}, limit=LIMIT) for _ in range(5)))
        assert {(r.status, r.error) for r in results} == {
            ("failed", "setup failed: the weights are missing")
        }
        assert setups() == 1  # nothing waiting ran it again

        async def retried() -> None:
            while setups() < 2:
                await collect(model, {}, limit=LIMIT)
                await asyncio.sleep(0.2)

        await asyncio.wait_for(retried(), LIMIT)  # after the backoff, setup is tried again
        assert model.runner.setup_backoff.failures >= 2
    finally:
        await model.stop()


async def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(first=2.0, cap=5.0)
    assert backoff.remaining() == 0
    delays = []
    for _ in range(4):
        backoff.failed("boom")
        delays.append(backoff.delay)
    assert delays == [2.0, 4.0, 5.0, 5.0]
    assert backoff.remaining() > 0 and backoff.error == "boom"
    backoff.succeeded()
    assert (backoff.remaining(), backoff.failures, backoff.error) == (0, 0, None)
