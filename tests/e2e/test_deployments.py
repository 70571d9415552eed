"""Deployments end to end with the official client: create, get, list, update (a new release each
time), delete, and predictions through a deployment; the scaling limits reach the engine.

`replicate.run()` in 1.0.7 has no way to name a deployment: deployment predictions go through
`client.deployments.predictions.create` (or a Deployment's `.predictions.create`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import replicate
from live import LiveServer, fixture_package
from replicate.exceptions import ReplicateError

TRAINER = Path(__file__).parent / "packages" / "trainer"
TERMINAL = ("succeeded", "failed", "canceled")


@pytest.fixture(scope="module")
def greeter(server: LiveServer) -> tuple[str, str]:
    """admin/greeter (private) with two versions: `hello {name}`, then `{prefix}untrained`."""
    first = server.push(fixture_package("output_str"), "admin/greeter")
    second = server.push(TRAINER, "admin/greeter")
    return first, second


def create_body(**changes: Any) -> dict[str, Any]:
    return {
        "name": "x",
        "model": "admin/greeter",
        "version": "",
        "hardware": "cpu",
        "min_instances": 0,
        "max_instances": 1,
        **changes,
    }


def ensure_deployment(http: httpx.Client, name: str, version: str) -> None:
    """admin/`name` deploying `version`, unless an earlier test of this module made it."""
    if http.get(f"/v1/deployments/admin/{name}").status_code == 404:
        made = http.post("/v1/deployments", json=create_body(name=name, version=version))
        assert made.status_code == 200


def every_call(http: httpx.Client, name: str, change: dict[str, Any]) -> tuple[httpx.Response, ...]:
    """GET, PATCH (with `change`), DELETE and a prediction on admin/`name`, in that order."""
    url = f"/v1/deployments/admin/{name}"
    return (
        http.get(url),
        http.patch(url, json=change),
        http.delete(url),
        http.post(f"{url}/predictions", json={"input": {}}),
    )


def finished(server: LiveServer, prediction_id: str) -> dict[str, Any]:
    """Polled without the recorder: unfinished predictions are not this module's subject."""
    with server.http() as http:
        for _ in range(3000):
            body = http.get(f"/v1/predictions/{prediction_id}").json()
            if body["status"] in TERMINAL:
                return body
            time.sleep(0.1)
    raise AssertionError(f"prediction {prediction_id} did not finish")


def test_lifecycle_with_the_official_client(
    client: replicate.Client, http: httpx.Client, greeter: tuple[str, str]
) -> None:
    first, second = greeter
    created = client.deployments.create(
        name="admin/dep",  # the client strips the owner
        model="admin/greeter",
        version=first,
        hardware="cpu",
        min_instances=0,
        max_instances=1,
    )
    assert (created.owner, created.name) == ("admin", "dep")
    release = created.current_release
    assert release is not None and release.number == 1
    assert (release.model, release.version) == ("admin/greeter", first)
    assert release.created_by is not None and release.created_by.username == "admin"
    config = release.configuration
    assert (config.hardware, config.min_instances, config.max_instances) == ("cpu", 0, 1)

    assert client.deployments.get("admin/dep").current_release.number == 1
    assert "dep" in [d.name for d in client.deployments.list().results]

    prediction = client.deployments.predictions.create(
        deployment="admin/dep", input={"name": "Ada"}
    )
    prediction.wait()
    assert prediction.status == "succeeded", prediction.error
    assert prediction.output == "hello Ada"
    body = http.get(f"/v1/predictions/{prediction.id}").json()
    assert body["deployment"] == "admin/dep"
    assert body["model"] == "admin/greeter" and body["version"] == first

    updated = client.deployments.update("admin", "dep", max_instances=2)
    assert updated.current_release.number == 2
    assert updated.current_release.version == first
    assert updated.current_release.configuration.max_instances == 2

    updated = client.deployments.update("admin", "dep", version=second)
    assert updated.current_release.number == 3
    assert updated.current_release.configuration.max_instances == 2  # kept
    deployment = client.deployments.get("admin/dep")
    again = deployment.predictions.create(input={"prefix": "> "})
    again.wait()
    assert again.output == "> untrained"  # the new release's version ran

    waited = http.post(
        "/v1/deployments/admin/dep/predictions",
        json={"input": {"prefix": "sync "}},
        headers={"Prefer": "wait=30"},
    )
    assert waited.status_code == 201, waited.text
    assert waited.json()["output"] == "sync untrained"
    assert waited.json()["deployment"] == "admin/dep"

    assert client.deployments.delete("admin", "dep") is True
    with pytest.raises(ReplicateError) as caught:
        client.deployments.get("admin/dep")
    assert caught.value.status == 404
    # its predictions stay, and still say which deployment made them
    assert http.get(f"/v1/predictions/{prediction.id}").json()["deployment"] == "admin/dep"


def test_limits_reach_the_engine(
    server: LiveServer, http: httpx.Client, greeter: tuple[str, str]
) -> None:
    """max_instances 0 holds predictions in the queue (and a busy deployment cannot be
    deleted); raising it lets them run on the same deployment's pool."""
    first, _ = greeter
    made = http.post("/v1/deployments", json=create_body(name="paused", version=first,
                                                         max_instances=0))  # fmt: skip
    assert made.status_code == 200, made.text
    queued = http.post("/v1/deployments/admin/paused/predictions", json={"input": {}})
    assert queued.status_code == 201 and queued.json()["status"] == "starting"
    busy = http.delete("/v1/deployments/admin/paused")
    assert busy.status_code == 409
    assert "queued or running" in busy.json()["detail"]
    assert http.get("/v1/deployments/admin/paused").status_code == 200

    resumed = http.patch("/v1/deployments/admin/paused", json={"max_instances": 1})
    assert resumed.json()["current_release"]["configuration"]["max_instances"] == 1
    done = finished(server, queued.json()["id"])
    assert done["status"] == "succeeded" and done["output"] == "hello world"
    assert http.delete("/v1/deployments/admin/paused").status_code == 204


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": None}, "name"),
        ({"model": None}, "model"),
        ({"version": None}, "version"),
        ({"hardware": None}, "hardware"),
        ({"min_instances": None}, "min_instances"),
        ({"max_instances": None}, "max_instances"),
        ({"name": "Has Spaces"}, "name"),
        ({"name": "a/b/c"}, "name"),
        ({"name": 7}, "name"),
        ({"model": "admin/none"}, "model"),
        ({"model": "nonsense"}, "model"),
        ({"version": "0" * 64}, "version"),
        ({"hardware": "tpu-v9"}, "hardware"),
        ({"min_instances": -1}, "min_instances"),
        ({"max_instances": -1}, "max_instances"),
        ({"min_instances": 2, "max_instances": 1}, "min_instances"),
        ({"max_instances": "2"}, "max_instances"),
        ({"max_instances": 1.5}, "max_instances"),
        ({"min_instances": True}, "min_instances"),
    ],
)
def test_create_names_what_is_wrong(
    http: httpx.Client, greeter: tuple[str, str], changes: dict[str, Any], field: str
) -> None:
    body = create_body(**{"name": "bad", "version": greeter[0], **changes})
    body = {k: v for k, v in body.items() if v is not None}
    answer = http.post("/v1/deployments", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert [f["field"] for f in answer.json()["invalid_fields"]] == [field]
    assert http.get("/v1/deployments/admin/bad").status_code == 404  # nothing was made


def test_create_conflicts_and_bad_json(http: httpx.Client, greeter: tuple[str, str]) -> None:
    body = create_body(name="twice", version=greeter[0])
    assert http.post("/v1/deployments", json=body).status_code == 200
    again = http.post("/v1/deployments", json={**body, "max_instances": 3})
    assert again.status_code == 409
    assert "twice" in again.json()["detail"]
    unchanged = http.get("/v1/deployments/admin/twice").json()["current_release"]
    assert unchanged["number"] == 1 and unchanged["configuration"]["max_instances"] == 1
    broken = http.post(
        "/v1/deployments", content=b"{", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422 and broken.json()["invalid_fields"][0]["field"] == "body"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body"),
        ({"name": "ignored"}, "body"),
        ({"version": "0" * 64}, "version"),
        ({"hardware": "gpu-none-such"}, "hardware"),
        ({"min_instances": 5}, "min_instances"),  # more than the current max of 1
        ({"max_instances": -3}, "max_instances"),
        ({"max_instances": "many"}, "max_instances"),
    ],
)
def test_update_names_what_is_wrong(
    http: httpx.Client, greeter: tuple[str, str], body: dict[str, Any], field: str
) -> None:
    ensure_deployment(http, "steady", greeter[0])
    answer = http.patch("/v1/deployments/admin/steady", json=body)
    assert answer.status_code == 422, answer.text
    assert [f["field"] for f in answer.json()["invalid_fields"]] == [field]
    release = http.get("/v1/deployments/admin/steady").json()["current_release"]
    assert release["number"] == 1  # no release was added


def test_unknown_deployments(http: httpx.Client) -> None:
    for answer in every_call(http, "none", {"max_instances": 1}):
        assert answer.status_code == 404
        assert answer.json()["detail"] == "The requested deployment does not exist."
    assert http.get("/v1/deployments", params={"cursor": "%%%"}).status_code == 400


def test_prediction_input_errors(http: httpx.Client, greeter: tuple[str, str]) -> None:
    ensure_deployment(http, "inputs", greeter[0])
    url = "/v1/deployments/admin/inputs/predictions"
    before = http.get("/v1/predictions").json()["results"]
    for body, field in (
        ({"input": {"name": 5}}, "input"),
        ({}, "input"),
        ({"input": []}, "input"),
        ({"input": {}, "webhook": "not a url"}, "webhook"),
    ):
        answer = http.post(url, json=body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["invalid_fields"][0]["field"].startswith(field)
    assert http.get("/v1/predictions").json()["results"] == before


def test_other_accounts_cannot_see_or_use_them(
    server: LiveServer, http: httpx.Client, hello: str, greeter: tuple[str, str]
) -> None:
    ensure_deployment(http, "mine", greeter[0])
    token = server.cli("token", "create", "--username", "carol").strip()
    with server.http(token=token) as carol:
        for answer in every_call(carol, "mine", {"max_instances": 2}):
            assert answer.status_code == 404
        assert carol.get("/v1/deployments").json()["results"] == []
        # admin/greeter is private: carol cannot deploy it; admin/hello is public: she can
        private = carol.post("/v1/deployments", json=create_body(name="mine", version=greeter[0]))
        assert private.status_code == 422
        assert private.json()["invalid_fields"][0]["field"] == "model"
        public = carol.post(
            "/v1/deployments", json=create_body(name="mine", model="admin/hello", version=hello)
        )
        assert public.status_code == 200, public.text
        assert public.json()["owner"] == "carol"
        assert public.json()["current_release"]["created_by"]["username"] == "carol"
    assert http.get("/v1/deployments/admin/mine").json()["owner"] == "admin"
