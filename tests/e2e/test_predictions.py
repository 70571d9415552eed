"""Predictions through a live server: every way to create one, `Prefer: wait`, polling, get,
list (filters, pagination), cancel, `Cancel-After`, input errors, auth, and the JSON shape rules.

The official Python client is the black box wherever it can do the job; httpx does the rest, and
every httpx response is checked against Replicate's OpenAPI spec and the client's own rules.
Models that must be mid-prediction wait on a gate file the test creates, so nothing here depends
on how long anything takes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import replicate
from live import PACKAGES, LiveServer
from predicting import TERMINAL, check_shape, wait_for
from replicate.exceptions import ReplicateError
from tests.contract.openapi import Contract, Recorder

UNAUTHENTICATED = "You did not pass a valid authentication token"
INVALID_VERSION = (
    "The specified version does not exist (or perhaps you don't have permission to use it?)"
)


# --- fixtures (waiting and shape checks are in predicting.py, `api` in conftest.py) ------------


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract.load()


@pytest.fixture
def recorder() -> Recorder:
    """Checked by each test itself (the conftest's would check once, at the module's end)."""
    return Recorder()


@pytest.fixture
def py(server: LiveServer, recorder: Recorder) -> replicate.Client:
    """The official client; its responses are recorded too (through its own httpx client)."""
    client = server.replicate()
    recorder.attach(client._client)
    return client


@pytest.fixture
def gate(tmp_path: Path) -> Callable[[], Path]:
    """A fresh path; a `slow` model given it runs until the test creates the file."""
    return lambda: tmp_path / f"gate-{uuid.uuid4().hex}"


def create(client: httpx.Client, path: str = "/v1/predictions", **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", {})
    return client.post(path, json=kwargs, headers=headers)


# --- creating -------------------------------------------------------------------------------


def test_python_client_creates_by_version_and_by_model(
    py: replicate.Client, noop: str, recorder: Recorder, contract: Contract, server: LiveServer
) -> None:
    by_version = py.predictions.create(version=noop, input={})
    assert by_version.status == "starting"
    by_model = py.predictions.create(model="admin/noop", input={})
    for prediction in (by_version, by_model):
        prediction.wait()
        assert prediction.status == "succeeded"
        assert prediction.output == "ok"
        assert prediction.version == noop
        assert prediction.model == "admin/noop"
    assert py.run(f"admin/noop:{noop}") == "ok"  # then GETs the version
    assert py.run("admin/noop") == "ok"  # the model route
    covered = recorder.check_all(contract)
    assert {"predictions.create", "models.predictions.create", "models.versions.get"} <= covered


def test_version_accepts_id_owner_name_id_and_owner_name(
    api: httpx.Client, noop: str, recorder: Recorder, contract: Contract, server: LiveServer
) -> None:
    for ref in (noop, f"admin/noop:{noop}", "admin/noop"):
        response = create(api, version=ref, input={}, headers={"Prefer": "wait"})
        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["status"], body["output"], body["version"]) == ("succeeded", "ok", noop)
        check_shape(server, body)
    recorder.check_all(contract)


def test_prefer_wait_answers_201_with_the_output(
    api: httpx.Client, noop: str, recorder: Recorder, contract: Contract, server: LiveServer
) -> None:
    response = create(api, version=noop, input={}, headers={"Prefer": "wait=10"})
    assert response.status_code == 201
    body = response.json()
    assert (body["status"], body["output"]) == ("succeeded", "ok")
    assert response.headers["Preference-Applied"] == "wait=10"
    assert response.headers["Location"] == body["urls"]["get"]
    check_shape(server, body)
    for asked in ("wait", "wait=60", "wait=61", "wait=3600"):  # more than 60 s is clamped
        response = create(api, version=noop, input={}, headers={"Prefer": asked})
        assert response.status_code == 201, (asked, response.text)
        assert response.headers["Preference-Applied"] == "wait=60", asked
        assert response.json()["output"] == "ok"
    recorder.check_all(contract)


def test_prefer_wait_that_runs_out_says_starting_while_processing(
    api: httpx.Client,
    slow: str,
    gate: Callable[[], Path],
    recorder: Recorder,
    contract: Contract,
    server: LiveServer,
) -> None:
    warm = create(api, version=slow, input={"tag": "warm"}, headers={"Prefer": "wait"})
    assert warm.json()["status"] == "succeeded"  # the instance is up: the next one processes
    door = gate()
    response = create(
        api, version=slow, input={"tag": "held", "gate": str(door)}, headers={"Prefer": "wait=1"}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "starting"  # the clients read anything else as finished
    assert body["output"] is None
    check_shape(server, body)
    seen = wait_for(api, body["id"], {"processing"})
    assert "start held" in seen["logs"]  # GET shows the real status
    door.touch()
    done = wait_for(api, body["id"], TERMINAL)
    assert (done["status"], done["output"]) == ("succeeded", "held")
    check_shape(server, done)
    recorder.check_all(contract)


def test_async_create_then_poll(
    api: httpx.Client,
    py: replicate.Client,
    noop: str,
    recorder: Recorder,
    contract: Contract,
    server: LiveServer,
) -> None:
    response = create(api, version=noop, input={})
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "starting"
    assert response.headers["Location"] == body["urls"]["get"]
    check_shape(server, body)
    prediction = py.predictions.get(body["id"])
    prediction.wait()
    assert (prediction.status, prediction.output) == ("succeeded", "ok")
    got = api.get(f"/v1/predictions/{body['id']}")
    assert got.headers["Cache-Control"] == "no-store"
    check_shape(server, got.json())
    assert got.json().get("started_at")
    recorder.check_all(contract)


def test_python_run_falls_back_to_polling_when_the_wait_runs_out(
    server: LiveServer,
    py: replicate.Client,
    slow: str,
    gate: Callable[[], Path],
    recorder: Recorder,
    contract: Contract,
) -> None:
    door = gate()

    def open_after_the_create(response: httpx.Response) -> None:  # run() has had its answer
        if response.request.method == "POST":
            door.touch()

    py._client.event_hooks["response"].append(open_after_the_create)
    output = py.run(f"admin/slow:{slow}", input={"tag": "fallback", "gate": str(door)}, wait=1)
    assert output == "fallback"
    creates = [r for r in recorder.responses if r.method == "POST"]
    assert [(r.status, r.body["status"]) for r in creates] == [(202, "starting")]
    recorder.check_all(contract)


def test_routes_answer_at_the_root_too(
    api: httpx.Client, noop: str, recorder: Recorder, contract: Contract
) -> None:
    response = create(api, "/predictions", version=noop, input={}, headers={"Prefer": "wait"})
    assert response.status_code == 201
    prediction_id = response.json()["id"]
    assert api.get(f"/predictions/{prediction_id}").json()["status"] == "succeeded"
    assert prediction_id in [p["id"] for p in api.get("/predictions").json()["results"]]
    by_model = create(api, "/models/admin/noop/predictions", input={}, headers={"Prefer": "wait"})
    assert by_model.json()["output"] == "ok"
    recorder.check_all(contract)


# --- listing --------------------------------------------------------------------------------


def test_list_is_newest_first_and_filters(
    api: httpx.Client,
    py: replicate.Client,
    noop: str,
    slow: str,
    recorder: Recorder,
    contract: Contract,
) -> None:
    made = [
        create(api, version=v, input=i, headers={"Prefer": "wait"}).json()
        for v, i in ((noop, {}), (slow, {"tag": "listed"}), (noop, {}))
    ]
    ids = [p["id"] for p in made]
    newest = py.predictions.list().results
    assert [p.id for p in newest[:3]] == ids[::-1]
    created = [p.created_at for p in newest]
    assert created == sorted(created, reverse=True)

    def listed(**params: str) -> list[str]:
        response = api.get("/v1/predictions", params=params)
        assert response.status_code == 200, response.text
        return [p["id"] for p in response.json()["results"]]

    after = listed(created_after=made[0]["created_at"])
    assert ids[1] in after and ids[2] in after and ids[0] not in after
    shifted = datetime.fromisoformat(made[0]["created_at"])
    shifted = shifted.astimezone(timezone(timedelta(hours=2))).isoformat()  # the same instant
    assert listed(created_after=shifted) == after
    before = listed(created_before=made[2]["created_at"])
    assert ids[0] in before and ids[1] in before and ids[2] not in before
    assert ids[1] in listed(model="admin/slow") and ids[0] not in listed(model="admin/slow")
    assert ids[0] in listed(version=noop) and ids[1] not in listed(version=noop)
    succeeded = api.get("/v1/predictions", params={"status": "succeeded"}).json()["results"]
    assert {p["status"] for p in succeeded} == {"succeeded"}
    assert set(ids) <= {p["id"] for p in succeeded}
    bad = api.get("/v1/predictions", params={"status": "finished"})
    assert bad.status_code == 400 and "status" in bad.json()["detail"]
    bad = api.get("/v1/predictions", params={"created_after": "yesterday"})
    assert bad.status_code == 422 and "created_after" in bad.text
    recorder.check_all(contract)


def test_paginate_over_more_than_one_page(
    api: httpx.Client, py: replicate.Client, noop: str, recorder: Recorder, contract: Contract
) -> None:
    ids = [create(api, version=noop, input={}).json()["id"] for _ in range(105)]
    pages = list(replicate.paginate(py.predictions.list))
    assert len(pages) >= 2 and len(pages[0].results) == 100
    listed = [p.id for page in pages for p in page.results]
    assert len(listed) == len(set(listed))  # no prediction twice
    assert [i for i in listed if i in set(ids)] == ids[::-1]  # all of them, newest first
    assert pages[0].next is not None and pages[0].next.startswith(py._base_url)  # type: ignore[attr-defined]
    recorder.check_all(contract)


# --- errors ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bob(server: LiveServer) -> str:
    """A second account, with a private model of its own."""
    token = server.cli("token", "create", "--username", "bob").strip()
    server.push(PACKAGES / "noop", "bob/secret", token=token)
    return token


@pytest.mark.parametrize(
    ("field", "value", "names"),
    [
        ("tag", None, "tag"),  # missing
        ("seconds", "abc", "seconds"),  # wrong type
        ("seconds", 61, "seconds"),  # above the maximum
    ],
)
def test_bad_input_is_422_with_invalid_fields(
    api: httpx.Client,
    slow: str,
    field: str,
    value: Any,
    names: str,
    recorder: Recorder,
    contract: Contract,
) -> None:
    before = api.get("/v1/predictions", params={"version": slow}).json()["results"]
    payload: dict[str, Any] = {"tag": "t"}
    payload.pop(field) if value is None else payload.update({field: value})
    response = create(api, version=slow, input=payload)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["invalid_fields"], problem
    assert any(names in f["field"] + f["description"] for f in problem["invalid_fields"])
    assert names in problem["detail"]
    after = api.get("/v1/predictions", params={"version": slow}).json()["results"]
    assert [p["id"] for p in after] == [p["id"] for p in before]  # nothing stored
    recorder.check_all(contract)


def test_invalid_fields_name_the_input_as_replicate_does(api: httpx.Client, slow: str) -> None:
    response = create(api, version=slow, input={"tag": "t", "seconds": 61})
    fields = response.json()["invalid_fields"]
    assert [f["field"] for f in fields] == ["input.seconds"]
    assert response.json()["detail"].startswith("- input.seconds: ")


def test_missing_input_reads_as_replicates_required(api: httpx.Client, slow: str) -> None:
    response = create(api, version=slow, input={})
    [field] = response.json()["invalid_fields"]
    assert field["type"] == "required"
    assert field["description"] == "tag is required"


def test_malformed_bodies_are_422_naming_the_field(
    api: httpx.Client, noop: str, recorder: Recorder, contract: Contract
) -> None:
    for body, field in (({"version": noop}, "input"), ({"input": {}}, "version")):
        response = api.post("/v1/predictions", json=body)
        assert response.status_code == 422
        assert field in response.json()["detail"]
    response = api.post(
        "/v1/predictions", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    recorder.check_all(contract)


def test_unknown_or_hidden_versions_are_the_same_422(
    server: LiveServer,
    api: httpx.Client,
    bob: str,
    slow: str,
    recorder: Recorder,
    contract: Contract,
) -> None:
    with recorder.attach(server.http(token=bob)) as as_bob:
        bodies = [
            create(api, version="0" * 64, input={}),
            create(api, version="admin/missing", input={}),
            create(api, version=f"admin/slow:{'0' * 64}", input={}),
            create(api, version="bob/secret", input={}),  # bob's private model, seen by admin
            create(as_bob, version=slow, input={"tag": "t"}),  # admin's private version, by id
            create(as_bob, version=f"admin/slow:{slow}", input={"tag": "t"}),
        ]
        hidden_model = create(as_bob, "/v1/models/admin/slow/predictions", input={"tag": "t"})
        missing_model = create(api, "/v1/models/admin/missing/predictions", input={})
    for response in bodies:
        assert response.status_code == 422, response.text
        assert response.json()["detail"] == INVALID_VERSION
        assert response.json()["title"] == "Invalid version or not permitted"
    assert hidden_model.status_code == missing_model.status_code == 404
    assert hidden_model.json()["detail"] == missing_model.json()["detail"]
    recorder.check_all(contract)


def test_auth_errors_use_replicates_wording(
    server: LiveServer, recorder: Recorder, contract: Contract
) -> None:
    for headers in ({}, {"Authorization": "Bearer r8_wrong"}, {"Authorization": "Basic x"}):
        with recorder.attach(server.http()) as client:
            client.headers.pop("Authorization")
            response = client.get("/v1/predictions", headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["detail"] == UNAUTHENTICATED
        assert response.json()["title"] == "Unauthenticated"
    with recorder.attach(server.http()) as client:
        accepted = client.get("/v1/predictions", headers={"Authorization": f"Token {server.token}"})
    assert accepted.status_code == 200
    with pytest.raises(ReplicateError) as raised:
        server.replicate(token="r8_wrong").predictions.list()
    assert raised.value.status == 401 and raised.value.detail == UNAUTHENTICATED
    recorder.check_all(contract)


def test_unset_timestamps_are_left_out_not_null(
    api: httpx.Client, noop: str, recorder: Recorder, contract: Contract
) -> None:
    fresh = create(api, version=noop, input={}).json()
    assert "started_at" not in fresh and "completed_at" not in fresh  # not null: absent
    recorder.check_all(contract)
