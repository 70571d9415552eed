"""Trainings end to end: the official client trains a real Cog trainer into a destination model,
and the new version runs with the trained weights. Also get, list, cancel and every error.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import replicate
from contract.openapi import Contract, Recorder
from live import LiveServer, fixture_package
from replicate.exceptions import ReplicateError

TRAINER = Path(__file__).parent / "packages" / "trainer"
TERMINAL = ("succeeded", "failed", "canceled")


@pytest.fixture(scope="module")
def trainer(server: LiveServer, http: httpx.Client) -> str:
    """The trainer package pushed as admin/trainer, and an empty admin/trained to train into."""
    version = server.push(TRAINER, "admin/trainer")
    created = http.post(
        "/v1/models",
        json={"owner": "admin", "name": "trained", "visibility": "private", "hardware": "cpu"},
    )
    assert created.status_code == 201, created.text
    return version


def wait_for(client: replicate.Client, training_id: str) -> Any:
    training = client.trainings.get(training_id)
    for _ in range(3000):  # the first boot builds the environment
        if training.status in TERMINAL:
            return training
        time.sleep(0.1)
        training.reload()
    raise AssertionError(f"training {training_id} did not finish: {training.status}")


def test_training_creates_a_version_that_runs_with_the_weights(
    server: LiveServer, client: replicate.Client, http: httpx.Client, trainer: str
) -> None:
    training = client.trainings.create(
        version=f"admin/trainer:{trainer}",
        input={"word": "ahoy", "times": 2},
        destination="admin/trained",
    )
    assert training.status == "starting"
    training = wait_for(client, training.id)
    assert training.status == "succeeded", training.error
    assert "learning 'ahoy' x2" in training.logs
    assert training.destination == "admin/trained"  # the client parsed output.version
    ref = training.output["version"]
    owner_name, new_id = ref.split(":")
    assert owner_name == "admin/trained" and len(new_id) == 64 and new_id != trainer
    with server.http() as plain:  # the weights URL works without auth, like any output file
        weights = httpx.get(training.output["weights"], verify=server.tls.context())
        assert weights.text == "ahoy ahoy"
        model = plain.get("/v1/models/admin/trained").json()
    assert model["latest_version"]["id"] == new_id

    version = client.models.get("admin/trained").versions.get(new_id)
    assert version.openapi_schema["components"]["schemas"]["Input"]
    assert client.run(ref, input={"prefix": "> "}) == "> learned: ahoy ahoy"
    assert client.run(f"admin/trainer:{trainer}", input={}) == "untrained"

    # The version id is a content hash: the same weights give the same version.
    again = client.trainings.create(
        version=f"admin/trainer:{trainer}", input={"word": "ahoy", "times": 2},
        destination="admin/trained",
    )  # fmt: skip
    again = wait_for(client, again.id)
    assert again.output["version"] == ref
    listed = http.get("/v1/models/admin/trained/versions").json()["results"]
    assert [v["id"] for v in listed] == [new_id]


def test_trainer_outputs_a_bare_path_or_no_weights(
    server: LiveServer, client: replicate.Client, http: httpx.Client, trainer: str
) -> None:
    """`train() -> Path` is the weights too; an output without a file fails and says why."""
    path_version = server.push(fixture_package("train_path"), "admin/path-trainer")
    done = wait_for(client, client.trainings.create(
        version=f"admin/path-trainer:{path_version}", input={"epochs": 2},
        destination="admin/trained",
    ).id)  # fmt: skip
    assert done.status == "succeeded", done.error
    assert done.output["version"].startswith("admin/trained:")
    assert httpx.get(done.output["weights"], verify=server.tls.context()).text == "epoch\n" * 2

    versions_before = http.get("/v1/models/admin/trained/versions").json()["results"]
    class_version = server.push(fixture_package("train_class"), "admin/class-trainer")
    failed = wait_for(client, client.trainings.create(
        version=f"admin/class-trainer:{class_version}", input={}, destination="admin/trained",
    ).id)  # fmt: skip
    assert failed.status == "failed"
    assert "no weights file" in failed.error
    assert failed.output is None
    assert http.get("/v1/models/admin/trained/versions").json()["results"] == versions_before


def test_get_list_and_cancel(client: replicate.Client, http: httpx.Client, trainer: str) -> None:
    created = http.post(
        f"/v1/models/admin/trainer/versions/{trainer}/trainings",
        json={"destination": "admin/trained", "input": {"word": "slow", "seconds": 300}},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "starting"
    assert "output" not in body  # Replicate's schema has no null output
    assert body["urls"]["get"].endswith(f"/v1/trainings/{body['id']}")
    assert body["destination"] == "admin/trained"
    assert created.headers["location"] == body["urls"]["get"]

    got = client.trainings.get(body["id"])
    assert got.id == body["id"] and got.input == {"word": "slow", "seconds": 300}
    page = client.trainings.list()
    assert page.results[0].id == body["id"]  # newest first

    canceled = client.trainings.cancel(body["id"])
    assert canceled.status == "canceled"
    assert http.get(f"/v1/trainings/{body['id']}").json()["status"] == "canceled"
    again = http.post(f"/v1/trainings/{body['id']}/cancel")  # canceling twice is harmless
    assert again.status_code == 200 and again.json()["status"] == "canceled"
    queued = http.get("/v1/trainings", params={"status": "canceled"}).json()["results"]
    assert body["id"] in [t["id"] for t in queued]


def test_missing_destination_has_replicates_wording(http: httpx.Client, trainer: str) -> None:
    answer = http.post(
        f"/v1/models/admin/trainer/versions/{trainer}/trainings",
        json={"destination": "admin/nowhere", "input": {}},
    )
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json() == {
        "detail": "The specified training destination does not exist",
        "status": 404,
    }


def test_the_python_client_reports_a_missing_destination(
    client: replicate.Client, trainer: str
) -> None:
    with pytest.raises(ReplicateError) as caught:
        client.trainings.create(
            version=f"admin/trainer:{trainer}", input={}, destination="admin/nowhere"
        )
    assert caught.value.status == 404
    assert caught.value.detail == "The specified training destination does not exist"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"destination": "admin/trained", "input": {"times": 99}}, "input.times"),
        ({"destination": "admin/trained", "input": {"times": "many"}}, "input.times"),
        ({"destination": "admin/trained", "input": {"word": 5}}, "input.word"),
        ({"destination": "admin/trained", "input": "word"}, "input"),
        ({"destination": "admin/trained"}, "input"),
        ({"input": {}}, "destination"),
        ({"destination": "trained", "input": {}}, "destination"),
        ({"destination": "admin/trained/x", "input": {}}, "destination"),
        ({"destination": "admin/trained", "input": {}, "webhook": "ftp://x"}, "webhook"),
    ],
)
def test_malformed_requests_name_the_field(
    http: httpx.Client, trainer: str, body: dict[str, Any], field: str
) -> None:
    before = http.get("/v1/trainings").json()["results"]
    answer = http.post(f"/v1/models/admin/trainer/versions/{trainer}/trainings", json=body)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert answer.headers["content-type"] == "application/problem+json"
    assert problem["status"] == 422
    fields = [f["field"] for f in problem["invalid_fields"]]
    assert any(field in f for f in fields), problem  # exact paths: see the test below
    assert http.get("/v1/trainings").json()["results"] == before  # nothing was stored


def test_input_errors_name_the_field_as_replicate_does(http: httpx.Client, trainer: str) -> None:
    answer = http.post(
        f"/v1/models/admin/trainer/versions/{trainer}/trainings",
        json={"destination": "admin/trained", "input": {"times": 99}},
    )
    assert [f["field"] for f in answer.json()["invalid_fields"]] == ["input.times"]


def test_bad_json_body(http: httpx.Client, trainer: str) -> None:
    answer = http.post(
        f"/v1/models/admin/trainer/versions/{trainer}/trainings",
        content=b"{not json", headers={"content-type": "application/json"},
    )  # fmt: skip
    assert answer.status_code == 422
    assert answer.json()["invalid_fields"][0]["field"] == "body"


def test_a_version_without_train_cannot_train(http: httpx.Client, hello: str) -> None:
    answer = http.post(
        f"/v1/models/admin/hello/versions/{hello}/trainings",
        json={"destination": "admin/hello", "input": {}},
    )
    assert answer.status_code == 422
    assert answer.json()["detail"] == "This version does not support training"


def test_unknown_model_version_and_training(http: httpx.Client, trainer: str) -> None:
    body = {"destination": "admin/trained", "input": {}}
    missing_model = http.post(f"/v1/models/admin/none/versions/{trainer}/trainings", json=body)
    assert missing_model.status_code == 404
    assert "model" in missing_model.json()["detail"]
    missing_version = http.post(f"/v1/models/admin/trainer/versions/{'0' * 64}/trainings",
                                json=body)  # fmt: skip
    assert missing_version.status_code == 404
    assert "version" in missing_version.json()["detail"]
    for answer in (http.get("/v1/trainings/nope"), http.post("/v1/trainings/nope/cancel")):
        assert answer.status_code == 404
        assert answer.json()["detail"] == "The requested training does not exist."
    assert http.get("/v1/trainings", params={"status": "done"}).status_code == 400
    assert http.get("/v1/trainings", params={"cursor": "%%%"}).status_code == 400


def test_a_prediction_is_not_a_training(server: LiveServer, http: httpx.Client, hello: str) -> None:
    with server.http() as unrecorded:  # this test is about trainings only
        prediction = unrecorded.post(
            "/v1/predictions", json={"version": hello, "input": {"name": "x"}}
        )
    assert prediction.status_code == 201
    assert http.get(f"/v1/trainings/{prediction.json()['id']}").status_code == 404


def test_other_accounts(server: LiveServer, http: httpx.Client, trainer: str) -> None:
    """Someone else's private destination does not exist for you; a public one is not yours."""
    bob_token = server.cli("token", "create", "--username", "bob").strip()
    http.post(
        "/v1/models",
        json={"owner": "admin", "name": "showcase", "visibility": "public", "hardware": "cpu"},
    )
    bob_version = server.push(TRAINER, "bob/trainer", token=bob_token)
    with server.http(token=bob_token) as bob:
        url = f"/v1/models/bob/trainer/versions/{bob_version}/trainings"
        private = bob.post(url, json={"destination": "admin/trained", "input": {}})
        assert private.status_code == 404
        assert private.json()["detail"] == "The specified training destination does not exist"
        public = bob.post(url, json={"destination": "admin/showcase", "input": {}})
        assert public.status_code == 403
        assert "admin/showcase" in public.json()["detail"]
        # admin's trainer is private: bob cannot train it, and cannot see admin's trainings
        theirs = bob.post(
            f"/v1/models/admin/trainer/versions/{trainer}/trainings",
            json={"destination": "bob/trainer", "input": {}},
        )
        assert theirs.status_code == 404
        admins = http.get("/v1/trainings").json()["results"]
        assert admins, "the tests above made trainings"
        assert bob.get(f"/v1/trainings/{admins[0]['id']}").status_code == 404
        assert bob.post(f"/v1/trainings/{admins[0]['id']}/cancel").status_code == 404
        assert bob.get("/v1/trainings").json()["results"] == []


def test_a_starting_prediction_meets_the_contract(server: LiveServer, hello: str) -> None:
    recorder = Recorder()
    with recorder.attach(server.http()) as http:
        http.post("/v1/predictions", json={"version": hello, "input": {"name": "y"}})
    recorder.check_all(Contract.load())
