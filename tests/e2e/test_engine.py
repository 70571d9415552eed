"""The engine seen from outside: the queue (FIFO, never a 409), cold boots that show their logs,
scale to zero, several instances or slots at once, worker crashes and setup failures.

Instances are watched as processes: a worker is a `modelyard_worker` process whose working folder
is a package unpacked under the server's data folder. Whether two predictions ran at the same
time is read from their statuses while both are held on gate files, never from a clock.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from live import PACKAGES, LiveServer, Tls, fixture_package, push_gated_setup, serving, workers
from predicting import TERMINAL, check_shape, eventually, get, start, wait_for
from replicate.exceptions import ModelError
from tests.contract.openapi import Contract, Recorder


@pytest.fixture
def recorder() -> Recorder:
    """Checked by each test itself (the conftest's would check once, at the module's end)."""
    return Recorder()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    # No warm templates (runtime/templates.py): the tests count the instances' worker processes,
    # and a template waiting for a version's next instance is one more.
    live = LiveServer(
        data_dir=tmp_path_factory.mktemp("engine"), tls=tls, extra_args=["--max-instances", "2"],
        env={"MODELYARD_WARM_TEMPLATES": "0"}, share_test_folders=True,
    ).start()  # fmt: skip
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def brief(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    with serving(tmp_path_factory, tls, "engine", "--idle-timeout", "1") as live:
        yield live


# --- the queue --------------------------------------------------------------------------------


def test_eight_concurrent_creates_queue_and_run_in_order(
    server: LiveServer, slow: str, recorder: Recorder
) -> None:
    """One instance, eight callers at once with `Prefer: wait`: no 409, all run, first in first."""
    answers: list[httpx.Response] = []

    def call(i: int) -> None:
        with recorder.attach(server.http()) as client:
            body = {"version": slow, "input": {"tag": f"q{i}", "seconds": 0.2}}
            answers.append(client.post("/v1/predictions", json=body, headers={"Prefer": "wait"}))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 8
    assert all(r.status_code in (201, 202) for r in answers), [r.text for r in answers]  # no 409
    with server.http() as client:
        done = [wait_for(client, r.json()["id"], TERMINAL) for r in answers]
    assert {p["status"] for p in done} == {"succeeded"}
    by_creation = sorted(done, key=lambda p: (p["created_at"], p["id"]))
    by_start = sorted(done, key=lambda p: p["started_at"])
    assert [p["id"] for p in by_start] == [p["id"] for p in by_creation]
    for earlier, later in itertools.pairwise(by_start):  # one instance: one at a time
        assert earlier["completed_at"] <= later["started_at"]
    recorder.check_all(Contract.load())


def test_cold_boot_stays_starting_and_logs_the_setup(
    server: LiveServer, api: httpx.Client, tmp_path: Path, recorder: Recorder
) -> None:
    version, gate = push_gated_setup(server, tmp_path, "coldboot")  # nothing booted yet
    prediction = start(api, version)
    booting = eventually(
        lambda: "setup: loading weights" in (p := get(api, prediction["id"]))["logs"] and p,
        "the setup log",
    )
    assert booting["status"] == "starting" and "started_at" not in booting
    assert "environment" in booting["logs"].lower()  # the environment step is logged too
    gate.touch()
    done = wait_for(api, prediction["id"], TERMINAL)
    assert (done["status"], done["output"]) == ("succeeded", "ready")
    logs = done["logs"]
    assert logs.lower().index("environment") < logs.index("setup: done") < logs.index("predicting")
    recorder.check_all(Contract.load())


def test_idle_instances_stop_and_come_back(brief: LiveServer) -> None:
    """`--idle-timeout 1`: the worker goes away after its prediction; the next one boots anew.
    (Pids are the host's, from /proc: in the sandbox a worker sees its own PID namespace.)"""
    version = brief.push(fixture_package("crash"), "admin/crash")
    client = brief.replicate()
    client.run(f"admin/crash:{version}", input={"how": "none"})
    eventually(lambda: not workers(brief), "the idle worker to stop")
    client.run(f"admin/crash:{version}", input={"how": "none"})  # only a new worker can run it
    eventually(lambda: not workers(brief), "the second worker to stop too")


def test_two_instances_run_two_predictions_at_once(pair: LiveServer, tmp_path: Path) -> None:
    version = pair.push(PACKAGES / "slow", "admin/slow")
    gates = {tag: tmp_path / tag for tag in ("a", "b")}
    with pair.http() as client:
        a, b = (start(client, version, tag=t, gate=str(g)) for t, g in gates.items())
        wait_for(client, a["id"], {"processing"})
        wait_for(client, b["id"], {"processing"})  # both at once: neither gate is open
        assert len(workers(pair)) == 2
        third = start(client, version, tag="c")
        assert get(client, third["id"])["status"] == "starting"  # both instances are busy
        gates["a"].touch()
        assert wait_for(client, third["id"], TERMINAL)["status"] == "succeeded"
        assert get(client, b["id"])["status"] == "processing"  # c ran beside b, on a's instance
        gates["b"].touch()
        a, b = (wait_for(client, p["id"], TERMINAL) for p in (a, b))
    assert a["started_at"] < b["completed_at"] and b["started_at"] < a["completed_at"]


def test_concurrency_max_runs_two_on_one_instance(
    server: LiveServer, api: httpx.Client, tmp_path: Path
) -> None:
    version = server.push(PACKAGES / "duo", "admin/duo")
    gates = {tag: tmp_path / tag for tag in ("a", "b")}
    a, b = (start(api, version, tag=t, gate=str(g)) for t, g in gates.items())
    wait_for(api, a["id"], {"processing"})
    wait_for(api, b["id"], {"processing"})
    third = start(api, version, tag="c", gate=str(gates["a"]))
    assert get(api, third["id"])["status"] == "starting"  # both slots are taken
    gates["a"].touch()
    assert wait_for(api, third["id"], TERMINAL)["output"] == "c"
    assert get(api, b["id"])["status"] == "processing"
    gates["b"].touch()
    assert {wait_for(api, p["id"], TERMINAL)["status"] for p in (a, b)} == {"succeeded"}


def test_slots_come_from_the_worker_and_a_ready_instance_takes_the_queue(
    server: LiveServer, api: httpx.Client, tmp_path: Path
) -> None:
    """`@cog.concurrent(max=3)` (not cog.yaml) gives three slots, and the two predictions that
    queued during the cold boot start as soon as it ends, beside the one that booted it (nothing
    else happens that could wake the queue: all three stay held on their gates)."""
    version, setup_gate = push_gated_setup(server, tmp_path, "trio", source="trio")
    gates = [tmp_path / tag for tag in ("a", "b", "c", "d")]
    first, second, third = (start(api, version, tag=g.name, gate=str(g)) for g in gates[:3])
    assert {get(api, p["id"])["status"] for p in (first, second, third)} == {"starting"}
    setup_gate.touch()
    for prediction in (first, second, third):
        wait_for(api, prediction["id"], {"processing"})
    fourth = start(api, version, tag="d", gate=str(gates[3]))
    assert get(api, fourth["id"])["status"] == "starting"  # three slots, all taken
    for gate in gates:
        gate.touch()
    done = [wait_for(api, p["id"], TERMINAL) for p in (first, second, third, fourth)]
    assert [p["output"] for p in done] == ["a", "b", "c", "d"]


def test_each_version_has_its_own_queue(
    server: LiveServer, api: httpx.Client, slow: str, tmp_path: Path
) -> None:
    """A version whose only instance is held does not hold up another version."""
    other = server.push(PACKAGES / "noop", "admin/noop")
    gate = tmp_path / "gate"
    held = start(api, slow, tag="held", gate=str(gate))
    wait_for(api, held["id"], {"processing"})
    assert wait_for(api, start(api, other)["id"], TERMINAL)["status"] == "succeeded"
    assert get(api, held["id"])["status"] == "processing"
    gate.touch()
    assert wait_for(api, held["id"], TERMINAL)["status"] == "succeeded"


# --- canceling ------------------------------------------------------------------------------


def test_cancel_while_processing(
    server: LiveServer, api: httpx.Client, slow: str, tmp_path: Path, recorder: Recorder
) -> None:
    prediction = server.replicate().predictions.create(
        version=slow, input={"tag": "doomed", "gate": str(tmp_path / "never")}
    )
    wait_for(api, prediction.id, {"processing"})
    prediction.cancel()
    assert prediction.status == "canceled"
    assert prediction.completed_at is not None
    body = get(api, prediction.id)
    assert body["status"] == "canceled" and "start doomed" in body["logs"]
    check_shape(server, body)
    after = start(api, slow, tag="after")  # the instance is free again
    assert wait_for(api, after["id"], TERMINAL)["status"] == "succeeded"
    recorder.check_all(Contract.load())


def test_cancel_while_queued_never_runs(
    server: LiveServer, api: httpx.Client, slow: str, tmp_path: Path, recorder: Recorder
) -> None:
    gate = tmp_path / "gate"
    first = start(api, slow, tag="first", gate=str(gate))
    wait_for(api, first["id"], {"processing"})
    queued = start(api, slow, tag="queued")
    canceled = api.post(f"/v1/predictions/{queued['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    check_shape(server, canceled.json())
    gate.touch()
    after = start(api, slow, tag="after")
    assert wait_for(api, after["id"], TERMINAL)["status"] == "succeeded"  # the queue moved on
    body = get(api, queued["id"])
    assert body["status"] == "canceled"
    assert "started_at" not in body and "start queued" not in body["logs"]
    assert wait_for(api, first["id"], TERMINAL)["status"] == "succeeded"
    again = api.post(f"/v1/predictions/{first['id']}/cancel")  # finished: nothing changes
    assert again.status_code == 200 and again.json()["status"] == "succeeded"
    assert api.post("/v1/predictions/nope/cancel").status_code == 404
    recorder.check_all(Contract.load())


def test_cancel_during_the_cold_boot(
    server: LiveServer, api: httpx.Client, tmp_path: Path, recorder: Recorder
) -> None:
    version, gate = push_gated_setup(server, tmp_path, "coldcancel")
    doomed, waiting = start(api, version), start(api, version)
    eventually(lambda: "setup: loading" in get(api, doomed["id"])["logs"], "the setup log")
    canceled = api.post(f"/v1/predictions/{doomed['id']}/cancel").json()
    assert canceled["status"] == "canceled"
    gate.touch()
    assert wait_for(api, waiting["id"], TERMINAL)["output"] == "ready"  # the boot still served
    body = get(api, doomed["id"])
    assert body["status"] == "canceled" and "predicting" not in body["logs"]
    recorder.check_all(Contract.load())


@pytest.mark.parametrize(("header", "seconds"), [("5s", 5), ("1s", 5), ("7", 7)])
def test_cancel_after_sets_a_deadline_that_cancels(
    server: LiveServer,
    api: httpx.Client,
    slow: str,
    header: str,
    seconds: int,
    recorder: Recorder,
) -> None:
    body = {"version": slow, "input": {"tag": "late", "seconds": 60}}
    response = api.post("/v1/predictions", json=body, headers={"Cancel-After": header})
    assert response.status_code == 201
    created = response.json()
    span = _parse(created["deadline"]) - _parse(created["created_at"])
    assert abs(span - seconds) < 1  # at least 5 s, as on Replicate; data, not a clock
    done = wait_for(api, created["id"], TERMINAL)
    assert done["status"] == "canceled"
    check_shape(server, done)
    for bad in ("soon", "-5", "1.5s"):
        refused = api.post("/v1/predictions", json=body, headers={"Cancel-After": bad})
        assert refused.status_code == 400 and "Cancel-After" in refused.json()["detail"]
    recorder.check_all(Contract.load())


def _parse(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


# --- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(("how", "reason"), [("exit", "exited with code 3"), ("kill", "SIGKILL")])
def test_a_worker_crash_fails_only_its_prediction(
    server: LiveServer, how: str, reason: str
) -> None:
    version = server.push(fixture_package("crash"), "admin/crash")
    client = server.replicate()
    with pytest.raises(ModelError) as raised:
        client.run(f"admin/crash:{version}", input={"how": how})
    error = raised.value.prediction.error or ""
    assert "worker process died" in error and reason in error, error
    assert f"about to {how}" in (raised.value.prediction.logs or "")
    pid = client.run(f"admin/crash:{version}", input={"how": "none"})  # a new worker
    assert isinstance(pid, int) and workers(server)  # (its pid is its PID namespace's own)
    assert server.process is not None and server.process.poll() is None


def test_a_setup_failure_fails_the_prediction_and_the_next(
    server: LiveServer, api: httpx.Client
) -> None:
    version = server.push(fixture_package("setup_failure"), "admin/broken")
    # The second fails the same way without running setup again: boots back off (pools.py).
    for logged in ("loading the model", "Setup is tried again"):
        prediction = wait_for(api, start(api, version, x=1)["id"], TERMINAL)
        assert prediction["status"] == "failed"
        assert prediction["error"].startswith("setup failed: ")
        assert "weights file is corrupt" in prediction["error"]
        assert logged in prediction["logs"]
        assert prediction["metrics"]["total_time"] >= 0
    with pytest.raises(ModelError, match="setup failed: .*weights file is corrupt"):
        server.replicate().run("admin/broken", input={})


def test_a_crashed_prediction_still_has_predict_time(server: LiveServer, api: httpx.Client) -> None:
    version = server.push(PACKAGES / "fragile", "admin/fragile")
    failed = wait_for(api, start(api, version, crash=True)["id"], TERMINAL)
    assert failed["status"] == "failed" and failed.get("started_at")
    assert isinstance(failed["metrics"].get("predict_time"), float), failed["metrics"]


def test_the_prediction_after_a_crash_shows_the_new_workers_setup(
    server: LiveServer, api: httpx.Client
) -> None:
    version = server.push(PACKAGES / "fragile", "admin/fragile")
    first = wait_for(api, start(api, version)["id"], TERMINAL)
    assert f"setup: worker {first['output']} ready" in first["logs"]
    assert wait_for(api, start(api, version, crash=True)["id"], TERMINAL)["status"] == "failed"
    after = wait_for(api, start(api, version)["id"], TERMINAL)
    assert after["output"] != first["output"]  # a new worker
    assert f"setup: worker {after['output']} ready" in after["logs"]
