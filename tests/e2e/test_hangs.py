"""Nothing hangs (issue 13), on a live server: a prediction stuck where a cancel cannot reach it
ends by `Cancel-After` or `/cancel` and the model's next prediction runs; an output that cannot
travel fails only its prediction; a failing setup runs once for everything queued and backs off;
SIGTERM lets a running prediction finish within the grace period and fails the rest with the
documented restart error, while queued ones run after the next start.

No test asserts a duration; every wait has a bound (`eventually`).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from live import PACKAGES, LiveServer, Tls, serving
from predicting import TERMINAL, eventually, get, start, wait_for

from modelyard.engine.engine import DEADLINE_LOG
from modelyard.engine.replicas import RESTART_ERROR

SETUP_ERROR = "setup failed: the weights are missing"


@pytest.fixture(scope="module")
def api(server: LiveServer) -> Iterator[httpx.Client]:
    with server.http() as client:
        yield client


@pytest.fixture(scope="module")
def stuck(server: LiveServer) -> str:
    return server.push(PACKAGES / "stuck", "admin/stuck")


@pytest.fixture(scope="module")
def stuck_async(server: LiveServer) -> str:
    return server.push(PACKAGES / "stuck_async", "admin/stuck-async")


def _logged(api: httpx.Client, prediction_id: str, text: str) -> dict[str, Any]:
    return eventually(
        lambda: text in (p := get(api, prediction_id)).get("logs", "") and p,
        f"{text!r} in the logs of {prediction_id}",
    )


def _whoami(api: httpx.Client, version: str) -> str:
    done = wait_for(api, start(api, version, how="whoami")["id"], TERMINAL)
    assert done["status"] == "succeeded", done
    return str(done["output"])


def test_cancel_after_ends_a_prediction_stuck_in_a_sleep(api: httpx.Client, stuck: str) -> None:
    before = _whoami(api, stuck)
    body = {"version": stuck, "input": {"how": "sleep"}}
    created = api.post("/v1/predictions", json=body, headers={"Cancel-After": "5s"})
    assert created.status_code == 201, created.text
    done = wait_for(api, created.json()["id"], TERMINAL)
    assert done["status"] == "canceled"  # as on Replicate: a deadline cancels
    assert DEADLINE_LOG in done["logs"] and "did not stop within" in done["logs"]
    assert _whoami(api, stuck) != before  # the next one runs, on a fresh worker


@pytest.mark.parametrize(
    ("package", "how"), [("stuck", "c_sleep"), ("stuck", "ignore"), ("stuck_async", "sleep")]
)
def test_cancel_answers_canceled_for_a_prediction_out_of_reach(
    request: pytest.FixtureRequest, api: httpx.Client, package: str, how: str
) -> None:
    version = request.getfixturevalue(package)
    before = _whoami(api, version)
    running = start(api, version, how=how)
    _logged(api, running["id"], f"stuck in {how}")
    answer = api.post(f"/v1/predictions/{running['id']}/cancel")
    assert answer.status_code == 200
    assert answer.json()["status"] == "canceled"  # the answer says how it ended
    assert get(api, running["id"])["status"] == "canceled"
    assert _whoami(api, version) != before


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("surrogate", "output cannot be encoded as JSON"),
        ("huge", "the output is too large to send to the runner"),
    ],
)
def test_an_output_that_cannot_travel_fails_only_its_prediction(
    api: httpx.Client, stuck: str, how: str, error: str
) -> None:
    before = _whoami(api, stuck)
    done = wait_for(api, start(api, stuck, how=how)["id"], TERMINAL)
    assert done["status"] == "failed" and error in done["error"]
    assert _whoami(api, stuck) == before  # the same worker took the next one


def test_a_failing_setup_runs_once_for_all_queued_and_backs_off(
    server: LiveServer, api: httpx.Client
) -> None:
    version = server.push(PACKAGES / "bad_setup", "admin/bad-setup")
    ids = [start(api, version)["id"] for _ in range(5)]
    ended = [wait_for(api, prediction_id, TERMINAL) for prediction_id in ids]
    assert {(p["status"], p["error"]) for p in ended} == {("failed", SETUP_ERROR)}
    assert sum(p["logs"].count("setup ran") for p in ended) == 1  # one setup for all five

    def retried() -> dict[str, Any] | None:
        done = wait_for(api, start(api, version)["id"], TERMINAL)
        assert (done["status"], done["error"]) == ("failed", SETUP_ERROR)
        return done if "setup ran" in done["logs"] else None

    eventually(retried, "setup to be tried again after the backoff")


def test_sigterm_lets_running_predictions_finish_within_the_grace(
    tmp_path_factory: pytest.TempPathFactory, tls: Tls
) -> None:
    with serving(tmp_path_factory, tls, "sigterm") as live:
        quick_version = live.push(PACKAGES / "stuck", "admin/stuck")
        slow_version = live.push(PACKAGES / "stuck_async", "admin/stuck-async")
        with live.http() as api:
            _whoami(api, quick_version)  # booted: the next ones start at once
            slow = start(api, slow_version, how="sleep")
            _logged(api, slow["id"], "stuck in sleep")
            quick = start(api, quick_version, how="quick")
            queued = start(api, quick_version, how="whoami")  # behind `quick`: one slot
            _logged(api, quick["id"], "working")
            assert live.process is not None
            live.process.send_signal(signal.SIGTERM)
            # uvicorn ends a graceful shutdown by raising the signal again
            assert live.process.wait(timeout=60) in (0, -signal.SIGTERM)
        live.start()  # the same data folder
        with live.http() as api:
            assert (get(api, quick["id"])["status"], get(api, quick["id"])["output"]) == (
                "succeeded",
                "quick",
            )
            failed = get(api, slow["id"])
            assert (failed["status"], failed["error"]) == ("failed", RESTART_ERROR)
            assert wait_for(api, queued["id"], TERMINAL)["status"] == "succeeded"
