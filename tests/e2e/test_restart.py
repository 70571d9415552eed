"""Design principle 3, nothing is lost: the server is killed with SIGKILL (no shutdown code runs)
and started again on the same data folder.

A prediction that was running ends `failed` with an error saying the server stopped; queued ones
(and one caught in its cold boot) run after the restart; canceled ones stay canceled; deadlines
still hold; models, versions, tokens and predictions are all still there.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import replicate
from live import PACKAGES, LiveServer, push_gated_setup, workers
from predicting import TERMINAL, eventually, get, wait_for
from tests.contract.openapi import Contract, Recorder


def start(
    client: httpx.Client, version: str, headers: dict[str, str] | None = None, **body: Any
) -> dict[str, Any]:
    response = client.post(
        "/v1/predictions", json={"version": version, **body}, headers=headers or {}
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_running_fails_queued_run_and_nothing_is_missing(
    server: LiveServer, slow: str, tmp_path: Path
) -> None:
    recorder = Recorder()
    with recorder.attach(server.http()) as api:
        running = start(
            api, slow, input={"tag": "running", "gate": str(tmp_path / "x")}, stream=True
        )
        wait_for(api, running["id"], {"processing"})
        queued = [start(api, slow, input={"tag": f"queued {i}"}) for i in range(3)]
        dropped = start(api, slow, input={"tag": "dropped"})
        assert api.post(f"/v1/predictions/{dropped['id']}/cancel").json()["status"] == "canceled"
        assert {get(api, p["id"])["status"] for p in queued} == {"starting"}
        before = workers(server)
        assert before, "the running prediction has a worker"

    server.restart()

    with recorder.attach(server.http()) as api:
        failed = wait_for(api, running["id"], TERMINAL)
        assert failed["status"] == "failed"
        assert "server stopped" in failed["error"]
        assert failed.get("completed_at") and "start running" in failed["logs"]
        done = [wait_for(api, p["id"], TERMINAL) for p in queued]
        assert [(p["status"], p["output"]) for p in done] == [
            ("succeeded", f"queued {i}") for i in range(3)
        ]
        assert [p["started_at"] for p in done] == sorted(p["started_at"] for p in done)  # FIFO
        stream = api.get(running["urls"]["stream"], headers={"Accept": "text/event-stream"})
        assert "event: error" in stream.text and '{"reason": "error"}' in stream.text
        canceled = get(api, dropped["id"])
        assert canceled["status"] == "canceled" and "started_at" not in canceled
    everything = {
        p.id for page in replicate.paginate(server.replicate().predictions.list) for p in page
    }
    assert {running["id"], dropped["id"], *(p["id"] for p in queued)} <= everything
    eventually(lambda: not (before & workers(server)), "the old workers to go away")
    recorder.check_all(Contract.load())


def test_a_prediction_caught_booting_boots_again_after_restart(
    server: LiveServer, tmp_path: Path
) -> None:
    version, gate = push_gated_setup(server, tmp_path, "bootkill")
    with server.http() as api:
        prediction = start(api, version, input={})
        eventually(lambda: "setup: loading" in get(api, prediction["id"])["logs"], "setup")
    server.restart()
    gate.touch()
    with server.http() as api:
        done = wait_for(api, prediction["id"], TERMINAL)
    assert (done["status"], done["output"]) == ("succeeded", "ready")


def test_deadlines_hold_across_a_restart(server: LiveServer, slow: str, tmp_path: Path) -> None:
    with server.http() as api:
        blocker = start(api, slow, input={"tag": "blocker", "gate": str(tmp_path / "x")})
        wait_for(api, blocker["id"], {"processing"})
        timed = start(api, slow, {"Cancel-After": "5s"}, input={"tag": "timed", "seconds": 60})
    server.restart()
    with server.http() as api:
        assert wait_for(api, timed["id"], TERMINAL)["status"] == "canceled"
        assert get(api, blocker["id"])["status"] == "failed"


def stored(api: httpx.Client, path: str) -> tuple[int, Any]:
    """What a GET answers, less the owner's view of running instances (which a restart ends)."""
    response = api.get(path)
    body = response.json()
    if isinstance(body, dict):
        body.pop("instances", None)
    return response.status_code, body


def test_an_idle_restart_keeps_everything(server: LiveServer, slow: str) -> None:
    bob = server.cli("token", "create", "--username", "bob").strip()
    version = server.push(PACKAGES / "noop", "admin/keeper")
    paths = [
        "/v1/models/admin/keeper",
        "/v1/models/admin/keeper/versions",
        f"/v1/models/admin/keeper/versions/{version}",
    ]
    with server.http() as api, server.http(token=bob) as as_bob:
        prediction = start(api, version, {"Prefer": "wait"}, input={})
        assert prediction["status"] == "succeeded"
        before = {path: stored(api, path) for path in paths}
        before_prediction = get(api, prediction["id"])
        bob_list = as_bob.get("/v1/predictions")
        assert bob_list.status_code == 200
    server.restart()
    with server.http() as api, server.http(token=bob) as as_bob:
        assert {path: stored(api, path) for path in paths} == before
        assert json.dumps(get(api, prediction["id"])) == json.dumps(before_prediction)
        assert as_bob.get("/v1/predictions").json() == bob_list.json()
        again = start(api, version, {"Prefer": "wait"}, input={})
        assert (again["status"], again["output"]) == ("succeeded", "ok")
    assert prediction["id"] in {p.id for p in server.replicate().predictions.list().results}


def test_a_prediction_failed_by_restart_has_predict_time(
    server: LiveServer, slow: str, tmp_path: Path
) -> None:
    with server.http() as api:
        running = start(api, slow, input={"tag": "cut", "gate": str(tmp_path / "x")})
        wait_for(api, running["id"], {"processing"})
    server.restart()
    with server.http() as api:
        failed = wait_for(api, running["id"], TERMINAL)
    assert failed["status"] == "failed" and failed.get("started_at")
    assert isinstance(failed["metrics"].get("predict_time"), float), failed["metrics"]


def test_a_wait_held_when_the_server_stops_answers_before_the_stop(
    server: LiveServer, slow: str, tmp_path: Path
) -> None:
    """A `Prefer: wait` held when the server is told to stop (SIGINT, as a rolling restart does)
    answers 202 `starting` at once, while its connection is still open: a cut connection is one
    the v2 client retries, creating the prediction again."""
    gate = tmp_path / "gate"
    answers: list[httpx.Response] = []

    def create() -> None:
        with server.http() as api:  # its read timeout (90 s) outlasts the wait
            answers.append(
                api.post(
                    "/v1/predictions",
                    json={"version": slow, "input": {"tag": "held", "gate": str(gate)}},
                    headers={"Prefer": "wait=60"},
                )
            )

    waiter = threading.Thread(target=create)
    waiter.start()
    with server.http() as api:
        eventually(
            lambda: any(
                p["status"] == "processing" and p["input"].get("gate") == str(gate)
                for p in api.get("/v1/predictions").json()["results"]
            ),
            "the held prediction to run",
        )
    server.stop()
    waiter.join(timeout=60)
    gate.touch()
    server.start()
    assert answers, "the held request got no answer"
    assert answers[0].status_code == 202, answers[0].text
    assert answers[0].json()["status"] == "starting"
    assert answers[0].headers["x-should-retry"] == "false"
