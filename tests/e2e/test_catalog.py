"""Collections, `GET /search`, the account, its webhook secret and the hardware list, through the
official Python client against a live server; every response is checked against the contract."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import replicate
from contract.openapi import Contract, Recorder
from live import LiveServer
from replicate.exceptions import ReplicateError
from test_models import create, problem, store

from modelyard.store.catalog import set_collection_models, upsert_collection
from modelyard.store.models import get_model


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    """Checked by the module's last test, which also asserts what it covered."""
    return Recorder()


def test_account(client: Any, bob_client: Any, http: httpx.Client) -> None:
    me = client.accounts.current()
    assert (me.type, me.username, me.name) == ("user", "admin", "admin")
    assert bob_client.accounts.current().username == "bob"
    problem(http.get("/v1/account", headers={"Authorization": "Bearer r8_nope"}), 401,
            "valid authentication token")  # fmt: skip
    problem(http.get("/v1/account", headers={"Authorization": ""}), 401)


def test_webhook_secret(client: Any, bob_client: Any, http: httpx.Client) -> None:
    key = client.webhooks.default.secret().key
    assert key.startswith("whsec_") and "_" not in key.removeprefix("whsec_")
    assert key == client.webhooks.default.secret().key  # stable
    assert bob_client.webhooks.default.secret().key != key  # one per account
    problem(http.get("/v1/webhooks/default/secret", headers={"Authorization": "Token x"}), 401)


def test_hardware(client: Any, http: httpx.Client) -> None:
    hardware = client.hardware.list()
    assert (hardware[0].sku, hardware[0].name) == ("cpu", "CPU")
    assert all(h.sku.startswith("gpu-") for h in hardware[1:])
    assert isinstance(http.get("/v1/hardware").json(), list)  # a bare array, not a page
    problem(http.get("/v1/hardware", headers={"Authorization": "Bearer"}), 401)


def test_collections(
    server: LiveServer, client: Any, bob_client: Any, http: httpx.Client, bob_http: httpx.Client
) -> None:
    assert list(client.collections.list()) == []
    create(http, "admin", "speak-a", description="Text to speech, quickly")
    create(http, "admin", "speak-b")
    create(http, "admin", "speak-mine", visibility="private")
    create(bob_http, "bob", "speak-bobs", visibility="private")
    with store(server) as session:
        refs = ("admin/speak-a", "admin/speak-b", "admin/speak-mine", "bob/speak-bobs")
        ids = {ref: get_model(session, *ref.split("/")).model.id for ref in refs}
        upsert_collection(session, "text-to-speech", "Text to speech", "Voices from text")
        upsert_collection(session, "empty", "Empty", "Nothing yet", "# Empty\n\nSoon.")
        set_collection_models(session, "text-to-speech", [ids["admin/speak-b"], *ids.values()])

    listed = client.collections.list()
    assert [(c.slug, c.name, c.description) for c in listed] == [
        ("text-to-speech", "Text to speech", "Voices from text"),
        ("empty", "Empty", "Nothing yet"),
    ]
    assert listed.next is None
    collection = client.collections.get("text-to-speech")
    assert collection.name == "Text to speech"
    # In the collection's order; each account sees public models and its own private ones.
    assert [m.id for m in collection.models] == ["admin/speak-b", "admin/speak-a",
                                                 "admin/speak-mine"]  # fmt: skip
    assert [m.id for m in bob_client.collections.get("text-to-speech").models] == [
        "admin/speak-b", "admin/speak-a", "bob/speak-bobs"]  # fmt: skip
    empty = http.get("/v1/collections/empty").json()
    assert empty["full_description"] == "# Empty\n\nSoon." and empty["models"] == []

    with store(server) as session:  # the platform renames it and changes its models
        upsert_collection(session, "text-to-speech", "Speech", "Voices", "Long text")
        set_collection_models(session, "text-to-speech", [ids["admin/speak-a"]])
    renamed = http.get("/v1/collections/text-to-speech").json()
    assert (renamed["name"], renamed["description"], renamed["full_description"]) == (
        "Speech", "Voices", "Long text")  # fmt: skip
    assert [m["name"] for m in renamed["models"]] == ["speak-a"]
    assert [len(p) for p in replicate.paginate(client.collections.list)] == [2]

    with pytest.raises(ReplicateError) as missing:
        client.collections.get("no-such-collection")
    assert missing.value.status == 404
    problem(http.get("/v1/collections?cursor=garbage!"), 400, "cursor")
    problem(http.get("/v1/collections", headers={"Authorization": "Bearer x"}), 401)


def test_search(http: httpx.Client, bob_http: httpx.Client) -> None:
    create(http, "admin", "speech-fast", description="Fast text to SPEECH")
    body = http.get("/v1/search", params={"query": "speech"}).json()
    assert body["query"] == "speech" and body["pages"] == []
    first = body["models"][0]
    assert first["model"]["name"] == "speech-fast"  # the name counts more than a description
    assert "speak-a" in [m["model"]["name"] for m in body["models"]]  # "text to speech, quickly"
    assert first["metadata"]["tags"] == [] and first["metadata"]["score"] > 0
    assert "generated_description" in first["metadata"]
    assert body["collections"] == [
        {
            "name": "Speech",
            "slug": "text-to-speech",
            "description": "Voices",
            "models": ["admin/speak-a"],
        }
    ]
    assert len(http.get("/search", params={"query": "speak", "limit": 1}).json()["models"]) == 1
    mine = [m["model"]["name"] for m in http.get("/v1/search?query=speak").json()["models"]]
    assert "speak-mine" in mine and "speak-bobs" not in mine
    bobs = [m["model"]["name"] for m in bob_http.get("/v1/search?query=speak").json()["models"]]
    assert "speak-bobs" in bobs and "speak-mine" not in bobs

    problem(http.get("/v1/search"), 400, "query", "required")
    problem(http.get("/v1/search?query=%20"), 400, "query")
    for limit in ("0", "51", "ten", "-1", "2.5"):
        problem(http.get("/v1/search", params={"query": "speech", "limit": limit}), 400, "limit")


def test_responses_meet_the_contract(recorder: Recorder) -> None:
    covered = recorder.check_all(Contract.load())
    assert {
        "account.get", "webhooks.default.secret.get", "hardware.list", "collections.list",
        "collections.get", "search", "models.create",
    } <= covered  # fmt: skip
