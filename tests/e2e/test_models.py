"""Models and versions through the official Python client (and httpx where it has no method),
against a live server; every response is checked against Replicate's contract at the end."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import replicate
from contract.openapi import Contract, Recorder
from live import LiveServer, fixture_package
from replicate.exceptions import ReplicateError
from sqlalchemy.orm import Session

from modelyard.store.catalog import mark_example
from modelyard.store.database import Database, sqlite_url

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    """Checked by the module's last test, which also asserts what it covered."""
    return Recorder()


@contextmanager
def store(server: LiveServer) -> Iterator[Session]:
    """The live server's own database, for what only the platform does (choosing examples)."""
    db = Database(sqlite_url(server.data_dir / "modelyard.db"))
    try:
        with db.session() as session:
            yield session
    finally:
        db.dispose()


def problem(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    """Assert a problem+json answer whose detail (or invalid fields) names what was wrong."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    text = (body["detail"] + str(body.get("invalid_fields", ""))).lower()
    for word in words:
        assert word.lower() in text, (word, body)
    return body


def create(http: httpx.Client, owner: str, name: str, **fields: Any) -> dict[str, Any]:
    body = {"owner": owner, "name": name, "visibility": "public", "hardware": "cpu", **fields}
    response = http.post("/v1/models", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_create_get_and_update(server: LiveServer, client: Any, http: httpx.Client) -> None:
    model = client.models.create(
        "admin", "llama-chat", visibility="public", hardware="cpu",
        description="A Llama that chats", github_url="https://github.com/ada/llama-chat",
    )  # fmt: skip
    assert (model.owner, model.name, model.visibility) == ("admin", "llama-chat", "public")
    assert model.url == f"{server.url}/admin/llama-chat"
    assert (model.run_count, model.latest_version, model.default_example) == (0, None, None)
    got = client.models.get("admin/llama-chat")
    assert got.description == "A Llama that chats"
    assert got.github_url == "https://github.com/ada/llama-chat"
    raw = http.get("/v1/models/admin/llama-chat").json()
    assert raw["is_official"] is False and raw["created_at"].endswith("Z")
    assert raw["weights_url"] is None

    changes = {
        "readme": "# Llama chat\n\nTalks like a zebra.",
        "weights_url": "https://huggingface.co/ada/llama",
        "description": "",
        "visibility": "private",
    }
    updated = http.patch("/v1/models/admin/llama-chat", json=changes)
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert body["weights_url"] == "https://huggingface.co/ada/llama"
    assert body["description"] is None  # "" clears a field
    assert body["visibility"] == "private"
    assert body["github_url"] == "https://github.com/ada/llama-chat"  # not sent, not changed
    readme = http.get("/models/admin/llama-chat/readme")  # the root works as /v1 does
    assert readme.status_code == 200
    assert readme.headers["content-type"].startswith("text/plain")
    assert readme.text == changes["readme"]
    http.patch(
        "/v1/models/admin/llama-chat",
        json={"visibility": "public", "description": "A Llama that chats"},
    )


def test_create_rejects_malformed_input(http: httpx.Client, bob_http: httpx.Client) -> None:
    good = {"owner": "admin", "name": "fine", "visibility": "public", "hardware": "cpu"}
    bad_json = http.post(
        "/v1/models", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    problem(bad_json, 422, "not valid JSON")
    problem(http.post("/v1/models", json=["owner"]), 422)
    problem(
        http.post("/v1/models", json={"owner": "admin", "name": "x"}), 422, "visibility", "hardware"
    )
    for name in ("Bad Name", "-dash", "UPPER", "a/b", "x" * 101, ""):
        problem(http.post("/v1/models", json={**good, "name": name}), 422, "name")
    problem(http.post("/v1/models", json={**good, "visibility": "secret"}), 422, "visibility")
    problem(http.post("/v1/models", json={**good, "hardware": "gpu-h1000"}), 422, "hardware", "cpu")
    problem(http.post("/v1/models", json={**good, "github_url": "github.com/x"}), 422, "github_url")
    problem(http.post("/v1/models", json={**good, "colour": "red"}), 422, "colour")
    problem(http.post("/v1/models", json={**good, "owner": "nobody"}), 404, "nobody")  # admin
    problem(bob_http.post("/v1/models", json=good), 403, "bob")
    # Nothing of the above was created.
    problem(http.get("/v1/models/admin/fine"), 404)
    create(http, "admin", "fine")
    problem(http.post("/v1/models", json=good), 409, "admin/fine", "already exists")
    problem(http.post("/v1/models", headers={"Authorization": "Bearer nope"}, json=good), 401)


def test_first_account_is_admin(http: httpx.Client, bob: str) -> None:
    body = {"owner": "bob", "name": "made-by-admin", "visibility": "public", "hardware": "cpu"}
    assert http.post("/v1/models", json=body).status_code == 201


def test_list_sorts_and_paginates(
    server: LiveServer, client: Any, http: httpx.Client, bob_http: httpx.Client
) -> None:
    names = [f"page-{i:02d}" for i in range(30)]
    for name in names:
        create(http, "admin", name, visibility="private" if name.endswith("7") else "public")
    create(bob_http, "bob", "bobs-secret", visibility="private")
    server.push(fixture_package("output_str"), "admin/page-03")  # the newest version of all

    pages = list(replicate.paginate(client.models.list))
    assert len(pages) >= 2
    assert all(p.next.startswith(f"{server.url}/v1/models?") for p in pages[:-1])
    listed = [f"{m.owner}/{m.name}" for p in pages for m in p]
    assert len(listed) == len(set(listed))  # no model twice across pages
    assert {f"admin/{n}" for n in names} <= set(listed)  # own private ones included
    assert "bob/bobs-secret" not in listed
    assert listed[0] == "admin/page-03"  # latest_version_created_at, newest first
    assert pages[0][0].latest_version is not None

    asc = _all(http, "/v1/models?sort_by=model_created_at&sort_direction=asc")
    mine = [n for n in asc if n.startswith("admin/page-")]
    assert mine == [f"admin/{n}" for n in names]
    desc = _all(http, "/v1/models?sort_by=model_created_at")
    assert [n for n in desc if n.startswith("admin/page-")] == mine[::-1]

    bobs = _all(bob_http, "/v1/models")
    assert "bob/bobs-secret" in bobs and "admin/page-07" not in bobs and "admin/page-08" in bobs

    problem(http.get("/v1/models?sort_by=name"), 400, "sort_by", "model_created_at")
    problem(http.get("/v1/models?sort_direction=up"), 400, "sort_direction", "asc")
    problem(http.get("/v1/models?cursor=not-a-cursor"), 400, "cursor")


def _all(http: httpx.Client, url: str | None) -> list[str]:
    """Every model of a listing, following the `next` URLs."""
    out: list[str] = []
    while url:
        body = http.get(url).json()
        out += [f"{m['owner']}/{m['name']}" for m in body["results"]]
        url = body["next"]
    return out


def test_search(client: Any, bob_client: Any, http: httpx.Client, bob_http: httpx.Client) -> None:
    create(bob_http, "bob", "llama-private", visibility="private", description="bob's llama")
    found = [m.id for m in client.models.search("llama")]
    assert found[0] == "admin/llama-chat"  # the name matches, not only the description
    assert "bob/llama-private" not in found
    assert "bob/llama-private" in [m.id for m in bob_client.models.search("LLAMA")]
    assert [m.id for m in client.models.search("ZEBRA")] == ["admin/llama-chat"]  # the readme
    assert [m.id for m in client.models.search("admin/llama-chat")] == ["admin/llama-chat"]
    assert list(client.models.search("no-such-thing-anywhere")) == []

    # The JS client sends the query JSON-encoded; one level of quoting comes off.
    quoted = http.request(
        "QUERY", "/v1/models", content='"llama"', headers={"Content-Type": "text/plain"}
    )
    assert quoted.status_code == 200
    assert [f"{m['owner']}/{m['name']}" for m in quoted.json()["results"]] == found
    raw_quotes = http.request("QUERY", "/v1/models", content='"\\"llama\\""')
    assert raw_quotes.status_code == 200  # only one level: the query is `"llama"` itself

    problem(http.request("QUERY", "/v1/models", content=""), 400, "empty")
    problem(http.request("QUERY", "/v1/models", content='""'), 400, "empty")
    problem(http.request("QUERY", "/v1/models", content=b"\xff\xfe"), 400, "UTF-8")
    problem(http.request("QUERY", "/v1/models", content="x" * 1001), 400, "1000")


def test_visibility_and_not_found(http: httpx.Client, bob_http: httpx.Client) -> None:
    problem(http.get("/v1/models/admin/nope"), 404, "does not exist")
    problem(http.get("/v1/models/nobody/nope"), 404)
    create(http, "admin", "hidden", visibility="private")
    assert http.get("/v1/models/admin/hidden").status_code == 200
    # Another account's private model does not exist, for every operation on it.
    for response in (
        bob_http.get("/v1/models/admin/hidden"),
        bob_http.patch("/v1/models/admin/hidden", json={"description": "mine now"}),
        bob_http.delete("/v1/models/admin/hidden"),
        bob_http.get("/v1/models/admin/hidden/readme"),
        bob_http.get("/v1/models/admin/hidden/examples"),
        bob_http.get("/v1/models/admin/hidden/versions"),
    ):
        problem(response, 404)
    assert http.get("/v1/models/admin/hidden").json()["description"] is None
    problem(bob_http.patch("/v1/models/admin/fine", json={"description": "x"}), 403, "owner")
    problem(bob_http.delete("/v1/models/admin/fine"), 403, "owner")
    problem(http.get("/v1/models/admin/fine/readme"), 404, "README")


def test_update_rejects_malformed_input(http: httpx.Client) -> None:
    before = http.get("/v1/models/admin/fine").json()
    url = "/v1/models/admin/fine"
    problem(
        http.patch(url, content=b"{", headers={"Content-Type": "application/json"}), 422, "JSON"
    )
    problem(http.patch(url, json={"visibility": "secret"}), 422, "visibility")
    problem(http.patch(url, json={"visibility": None}), 422, "visibility")
    problem(http.patch(url, json={"hardware": "gpu-h1000"}), 422, "hardware")
    problem(http.patch(url, json={"paper_url": "ftp://x"}), 422, "paper_url")
    problem(http.patch(url, json={"name": "renamed"}), 422, "name")
    problem(http.patch(url, json={"description": 7}), 422, "description")
    problem(http.patch("/v1/models/admin/nope", json={"description": "x"}), 404)
    assert http.get(url).json() == before  # nothing changed


def test_versions_and_delete(server: LiveServer, client: Any, http: httpx.Client) -> None:
    first = server.push(fixture_package("output_str"), "admin/scratch")  # private when pushed
    second = server.push(fixture_package("output_int"), "admin/scratch")
    model = client.models.get("admin/scratch")
    assert model.visibility == "private" and model.latest_version.id == second
    versions = model.versions.list()
    assert [v.id for v in versions] == [second, first]
    assert model.versions.get(first).openapi_schema["components"]["schemas"]["Output"]

    with pytest.raises(ReplicateError) as public:
        client.models.delete("admin/page-00")
    assert public.value.status == 409 and "private" in str(public.value.detail)
    problem(http.delete("/v1/models/admin/scratch"), 409, "versions")
    # Replicate answers 202 here; the Python client then reports False, yet the version is gone.
    assert model.versions.delete(second) is False
    with pytest.raises(ReplicateError) as missing:
        model.versions.get(second)
    assert missing.value.status == 404
    assert client.models.get("admin/scratch").latest_version.id == first
    model.versions.delete(first)
    assert client.models.get("admin/scratch").latest_version is None
    assert client.models.delete("admin/scratch") is True
    with pytest.raises(ReplicateError) as gone:
        client.models.get("admin/scratch")
    assert gone.value.status == 404
    problem(http.delete("/v1/models/admin/scratch"), 404)


def test_examples_and_default_example(
    server: LiveServer, hello: str, client: Any, http: httpx.Client
) -> None:
    assert client.models.get("admin/hello").visibility == "public"  # the fixture's PATCH
    runner = server.replicate()  # not recorded: predictions are checked elsewhere (see below)
    prediction = runner.predictions.create(version=hello, input={"name": "Example"})
    prediction.wait()
    runner.predictions.create(version=hello, input={"name": "Other"}).wait()
    assert http.get("/v1/models/admin/hello/examples").json()["results"] == []
    with store(server) as session:
        mark_example(session, prediction.id, default=True)

    model = client.models.get("admin/hello")
    assert model.run_count >= 2
    assert model.default_example is not None and model.default_example.id == prediction.id
    assert model.default_example.output == ["Hello, Example! "]
    page = http.get("/v1/models/admin/hello/examples").json()
    assert [p["id"] for p in page["results"]] == [prediction.id]
    assert page["next"] is None
    problem(http.get("/v1/models/admin/hello/examples?cursor=%%%"), 400, "cursor")
    problem(http.get("/v1/models/admin/nope/examples"), 404)


def test_created_prediction_meets_the_contract(server: LiveServer, hello: str) -> None:
    recorder = Recorder()
    with recorder.attach(server.http()) as http:
        http.post("/v1/predictions", json={"version": hello, "input": {"name": "Contract"}})
    recorder.check_all(Contract.load())


def test_responses_meet_the_contract(recorder: Recorder) -> None:
    covered = recorder.check_all(Contract.load())
    assert {
        "models.create", "models.get", "models.list", "models.search", "models.update",
        "models.delete", "models.readme.get", "models.examples.list", "models.versions.list",
        "models.versions.get", "models.versions.delete",
    } <= covered  # fmt: skip
