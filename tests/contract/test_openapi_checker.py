"""The contract checker itself: it passes the real response shapes and fails the broken ones."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from .openapi import (
    CLIENT_CHECKS,
    Contract,
    ContractError,
    Operation,
    OperationNotFound,
    Recorder,
)

VERSION_ID = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa"
BASE = "https://yard.example/v1"

# replicate-api.md §2.2, verbatim.
MODEL = {
    "url": "https://replicate.com/mattt/empty",
    "owner": "mattt",
    "name": "empty",
    "description": None,
    "visibility": "public",
    "github_url": None,
    "paper_url": None,
    "license_url": None,
    "run_count": 0,
    "cover_image_url": None,
    "default_example": None,
    "latest_version": None,
}
# replicate-api.md §2.8 (recorded 2024), ids and hashes filled in.
FILE = {
    "id": "NGZiYzM2ZjktNGM5Mi00ZjhmLWFmOGEtMjY4NmRhNmE2YjAx",
    "name": "test_fileo20o3wth.txt",
    "content_type": "text/plain",
    "size": 0,
    "etag": "d41d8cd98f00b204e9800998ecf8427e",
    "checksums": {
        "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "md5": "d41d8cd98f00b204e9800998ecf8427e",
    },
    "metadata": {},
    "created_at": "2024-08-22T12:26:51.079Z",
    "expires_at": "2024-08-23T12:26:51.079Z",
    "urls": {
        "get": "https://api.replicate.com/v1/files/NGZiYzM2ZjktNGM5Mi00ZjhmLWFmOGEtMjY4NmRhNmE2YjAx"
    },
}
# replicate-api.md §2.1 create response, plus what the spec requires (output, data_removed, web).
PREDICTION = {
    "id": "azaq55dbukgxg6kubr4k6g3pby",
    "model": "stability-ai/sdxl",
    "version": VERSION_ID,
    "input": {"prompt": "a yard"},
    "output": None,
    "logs": "",
    "error": None,
    "status": "starting",
    "data_removed": False,
    "created_at": "2023-11-16T11:46:16.064900134Z",
    "urls": {
        "cancel": f"{BASE}/predictions/azaq55dbukgxg6kubr4k6g3pby/cancel",
        "get": f"{BASE}/predictions/azaq55dbukgxg6kubr4k6g3pby",
        "stream": "https://yard.example/stream/azaq55dbukgxg6kubr4k6g3pby",
        "web": "https://yard.example/p/azaq55dbukgxg6kubr4k6g3pby",
    },
}
VERSION = {
    "id": VERSION_ID,
    "created_at": "2024-01-02T03:04:05.123456Z",
    "cog_version": "0.9.4",
    "openapi_schema": {"components": {"schemas": {"Input": {}, "Output": {}}}},
}
TRAINING = {
    "id": "zz4ibbonubfz7carwiefibzgga",
    "model": "alice/trainer",
    "version": VERSION_ID,
    "input": {"steps": 1},
    "logs": "",
    "error": None,
    "status": "succeeded",
    "created_at": "2024-01-02T03:04:05Z",
    "completed_at": "2024-01-02T03:05:05Z",
    "output": {"version": f"alice/trained:{VERSION_ID}", "weights": f"{BASE}/files/w"},
    "urls": {
        "get": f"{BASE}/trainings/zz4ibbonubfz7carwiefibzgga",
        "cancel": f"{BASE}/trainings/zz4ibbonubfz7carwiefibzgga/cancel",
    },
}
ACCOUNT = {"type": "user", "username": "alice", "name": "Alice"}
DEPLOYMENT = {
    "owner": "alice",
    "name": "hello",
    "current_release": {
        "number": 1,
        "model": "alice/hello",
        "version": VERSION_ID,
        "created_at": "2024-01-02T03:04:05Z",
        "created_by": ACCOUNT,
        "configuration": {"hardware": "cpu", "min_instances": 0, "max_instances": 1},
    },
}


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract.load()


def page(*results: Any, next: str | None = None) -> dict[str, Any]:
    return {"next": next, "previous": None, "results": list(results)}


def changed(body: dict[str, Any], **updates: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    for key, value in updates.items():
        target, *rest = key.split("__")
        if rest:
            out[target][rest[0]] = value
        elif value is ...:
            del out[key]
        else:
            out[key] = value
    return out


def violations(
    contract: Contract,
    method: str,
    path: str,
    status: int,
    body: Any,
    content_type: str | None = "application/json",
) -> list[tuple[str, str]]:
    with pytest.raises(ContractError) as caught:
        contract.check(method, path, status, body, content_type)
    assert str(caught.value).count("\n") == len(caught.value.violations)
    return [(v.where, v.message) for v in caught.value.violations]


def test_operations_lists_all_37_including_query(contract: Contract) -> None:
    ops = contract.operations()
    assert len(ops) == len({op.operation_id for op in ops}) == 37
    assert Operation("QUERY", "/models", "models.search") in ops
    assert set(CLIENT_CHECKS) <= {op.operation_id for op in ops}


@pytest.mark.parametrize(
    ("method", "path", "operation_id"),
    [
        ("GET", f"/v1/models/alice/hello/versions/{VERSION_ID}", "models.versions.get"),
        ("get", "/models/alice/hello/versions", "models.versions.list"),
        ("QUERY", "/v1/models", "models.search"),
        ("GET", f"{BASE}/models?cursor=abc", "models.list"),
        ("POST", "/v1/predictions/xyz/cancel", "predictions.cancel"),
        ("GET", "/v1/webhooks/default/secret", "webhooks.default.secret.get"),
        ("DELETE", "/v1/deployments/alice/hello", "deployments.delete"),
    ],
)
def test_operation_matches_concrete_paths(
    contract: Contract, method: str, path: str, operation_id: str
) -> None:
    assert contract.operation(method, path).operation_id == operation_id


def test_operation_not_found_is_explained(contract: Contract) -> None:
    with pytest.raises(OperationNotFound, match="no spec path matches '/nope'"):
        contract.operation("GET", "/v1/nope")
    with pytest.raises(OperationNotFound, match=r"has only GET \(predictions.get\)"):
        contract.operation("DELETE", "/v1/predictions/xyz")


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        ("GET", "/v1/models/mattt/empty", 200, MODEL),
        ("POST", "/v1/models", 201, changed(MODEL, is_official=False, description="a model")),
        (
            "GET",
            "/v1/models",
            200,
            page(
                changed(MODEL, latest_version=VERSION, default_example=PREDICTION),
                next=f"{BASE}/models?c=1",
            ),
        ),
        ("QUERY", "/v1/models", 200, page(changed(MODEL, description="x"))),
        ("GET", f"/v1/files/{FILE['id']}", 200, FILE),
        ("POST", "/v1/files", 201, FILE),
        ("GET", "/v1/files", 200, page(FILE)),
        ("POST", "/v1/predictions", 201, PREDICTION),
        ("POST", "/v1/models/a/b/predictions", 202, changed(PREDICTION, version="hidden")),
        (
            "GET",
            "/v1/predictions/x",
            200,
            changed(
                PREDICTION,
                status="succeeded",
                output=["a"],
                metrics={"predict_time": 1.5, "tokens": 3},
            ),
        ),
        ("GET", "/v1/predictions", 200, page(PREDICTION)),
        ("GET", f"/v1/models/a/b/versions/{VERSION_ID}", 200, VERSION),
        ("GET", "/v1/models/a/b/versions", 200, page(VERSION)),
        ("POST", f"/v1/models/a/b/versions/{VERSION_ID}/trainings", 201, TRAINING),
        ("GET", "/v1/trainings", 200, page(changed(TRAINING, output=..., status="processing"))),
        ("GET", "/v1/account", 200, ACCOUNT),
        ("GET", "/v1/deployments/alice/hello", 200, DEPLOYMENT),
        ("GET", "/v1/deployments", 200, page(DEPLOYMENT, {"owner": "a", "name": "b"})),
        (
            "GET",
            "/v1/collections/x",
            200,
            {
                "name": "X",
                "slug": "x",
                "description": "d",
                "full_description": None,
                "models": [MODEL],
            },
        ),
        ("GET", "/v1/collections", 200, page({"name": "X", "slug": "x", "description": "d"})),
        ("GET", "/v1/hardware", 200, [{"sku": "cpu", "name": "CPU"}]),
        (
            "GET",
            "/v1/webhooks/default/secret",
            200,
            {"key": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
        ),
    ],
)
def test_good_bodies_pass(
    contract: Contract, method: str, path: str, status: int, body: Any
) -> None:
    contract.check(method, path, status, body, "application/json")


def test_missing_required_field_and_wrong_type(contract: Contract) -> None:
    found = violations(
        contract,
        "GET",
        "/v1/models/mattt/empty",
        200,
        changed(MODEL, owner=..., run_count="12", url="/mattt/empty"),
    )
    assert ("$", "[py-client] 'owner' is a required property") in found
    assert ("$.run_count", "'12' is not of type 'integer'") in found  # the spec's own schema
    assert ("$.run_count", "[py-client] '12' is not of type 'integer'") in found
    assert ("$.url", "'/mattt/empty' is not a 'uri'") in found  # format uri means absolute
    found = violations(contract, "GET", "/v1/predictions/x", 200, changed(PREDICTION, model=...))
    assert ("$", "'model' is a required property") in found


def test_file_without_name_and_etag_fails_only_the_client(contract: Contract) -> None:
    spec_exact = changed(FILE, name=..., etag=...)
    assert violations(contract, "GET", "/v1/files/x", 200, spec_exact) == [
        ("$", "[py-client] 'etag' is a required property"),
        ("$", "[py-client] 'name' is a required property"),
    ]


def test_null_stream_url_and_aborted_status(contract: Contract) -> None:
    found = violations(
        contract,
        "GET",
        "/v1/predictions/x",
        200,
        changed(PREDICTION, urls__stream=None, status="aborted", error=7),
    )
    assert ("$.urls.stream", "None is not of type 'string'") in found
    assert ("$.urls.stream", "[py-client] None is not of type 'string'") in found
    assert any(
        w == "$.status" and m.startswith("[py-client] 'aborted' is not one of") for w, m in found
    )
    assert not any(w == "$.status" and "py-client" not in m for w, m in found)  # spec allows it
    assert ("$.error", "7 is not of type 'string', 'null'") in found


def test_training_output_needs_owner_name_version(contract: Contract) -> None:
    bare = changed(TRAINING, output={"version": VERSION_ID, "weights": "w"})
    found = violations(contract, "GET", "/v1/trainings/x", 200, bare)
    assert found == [
        ("$.output.version", f"[py-client] '{VERSION_ID}' does not match '^[^/]+/[^/:]+:.+$'")
    ]


def test_version_needs_cog_version_and_schema(contract: Contract) -> None:
    found = violations(
        contract,
        "GET",
        "/v1/models/a/b/versions/x",
        200,
        changed(VERSION, cog_version=None, openapi_schema=None),
    )
    assert found == [
        ("$.cog_version", "[py-client] None is not of type 'string'"),
        ("$.openapi_schema", "[py-client] None is not of type 'object'"),
    ]


def test_nested_model_parts_and_other_client_rules(contract: Contract) -> None:
    nested = changed(MODEL, latest_version=changed(VERSION, cog_version=None))
    assert violations(contract, "GET", "/v1/models/a/b", 200, nested) == [
        ("$.latest_version.cog_version", "[py-client] None is not of type 'string'")
    ]
    assert ("$.description", "None is not of type 'string'") in violations(
        contract,
        "GET",
        "/v1/collections/x",
        200,
        {"name": "X", "slug": "x", "description": None, "models": []},
    )
    assert ("$", "[py-client] 'name' is a required property") in violations(
        contract, "GET", "/v1/account", 200, changed(ACCOUNT, name=...)
    )
    assert (
        "$",
        "[py-client] {'results': [{'sku': 'cpu', 'name': 'CPU'}]} is not of type 'array'",
    ) in violations(
        contract, "GET", "/v1/hardware", 200, {"results": [{"sku": "cpu", "name": "CPU"}]}
    )
    assert (
        violations(contract, "GET", "/v1/webhooks/default/secret", 200, {"key": "whsec_a_b"})[0][0]
        == "$.key"
    )


def test_page_next_must_be_absolute(contract: Contract) -> None:
    relative = page(MODEL, next="/v1/models?cursor=x")
    assert violations(contract, "GET", "/v1/models", 200, relative) == [
        ("$.next", "[py-client] '/v1/models?cursor=x' does not match '^https?://[^/?#]+'")
    ]
    found = violations(contract, "GET", "/v1/predictions", 200, page(next="/v1/predictions?c=1"))
    assert ("$.next", "'/v1/predictions?c=1' is not a 'uri'") in found  # spec says format: uri


def test_204_must_be_empty_and_other_2xx_fall_back(contract: Contract) -> None:
    contract.check("DELETE", "/v1/deployments/a/b", 204, None)
    contract.check("DELETE", "/v1/files/x", 204, b"")
    # The spec declares 202 here, but the Python client wants 204.
    contract.check("DELETE", f"/v1/models/a/b/versions/{VERSION_ID}", 204, None)
    assert violations(contract, "DELETE", "/v1/models/a/b", 204, {"ok": True})[0][1].startswith(
        "a 204 response must have no body"
    )
    contract.check("POST", "/v1/deployments", 201, DEPLOYMENT)  # declared 200; any 2xx works
    assert violations(contract, "POST", "/v1/deployments", 201, {"owner": 1, "name": "b"}) == [
        ("$.owner", "1 is not of type 'string'"),
        ("$.owner", "[py-client] 1 is not of type 'string'"),
    ]
    assert (
        "status 302 is not declared" in violations(contract, "GET", "/v1/account", 302, None)[0][1]
    )


def test_non_json_responses(contract: Contract) -> None:
    contract.check("GET", "/v1/models/a/b/readme", 200, "# Hello", "text/plain; charset=utf-8")
    contract.check("GET", "/v1/files/x/download", 200, b"\x00\x01", "application/octet-stream")
    assert violations(contract, "GET", "/v1/models/a/b/readme", 200, "# Hello", "text/html") == [
        ("$", "content type text/html is not declared (text/plain)")
    ]


def test_error_responses_are_problem_details(contract: Contract) -> None:
    problem = {"title": "Not found", "detail": "Prediction not found", "status": 404}
    contract.check("GET", "/v1/predictions/x", 404, problem, "application/problem+json")
    contract.check("GET", "/v1/files/x", 404, problem, "application/problem+json")  # declared
    contract.check(
        "POST",
        "/v1/predictions",
        422,
        {"detail": "- input: x is required\n", "status": 422, "invalid_fields": []},
        None,
    )
    assert violations(contract, "GET", "/v1/predictions/x", 404, {"detail": "Not Found"}) == [
        ("$", "an error must be application/problem+json, got application/json"),
        ("$.status", "must be the HTTP status 404 (an integer), got None"),
    ]
    assert violations(
        contract,
        "GET",
        "/v1/files/x",
        404,
        {"detail": 3, "status": "404"},
        "application/problem+json",
    ) == [
        ("$.detail", "problem details need a string detail, got 3"),
        ("$.status", "must be the HTTP status 404 (an integer), got '404'"),
        ("$.detail", "3 is not of type 'string'"),
    ]
    assert violations(contract, "GET", "/v1/account", 500, "Internal Server Error", "text/plain")[
        -1
    ][1].startswith("problem details must be a JSON object")


def _app(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path == "/v1/account":
        return httpx.Response(200, json=ACCOUNT)
    if path == "/v1/models/mattt/empty":
        return httpx.Response(200, json=changed(MODEL, visibility="secret"))
    if path == "/v1/predictions/x":
        return httpx.Response(
            404,
            json={"detail": "Not found", "status": 404},
            headers={"content-type": "application/problem+json"},
        )
    if path.startswith("/stream/"):
        return httpx.Response(
            200, text="event: done\ndata: {}\n\n", headers={"content-type": "text/event-stream"}
        )
    if path.startswith("/v1/deployments/"):
        return httpx.Response(204)
    return httpx.Response(200, content=b"PNG", headers={"content-type": "image/png"})


#: GETs both recorder tests make (the sync one streams /stream/x instead of GETting it).
_GETS = ("/v1/account", "/v1/models/mattt/empty", "/v1/predictions/x", "/outputs/x.png")


def _expect_recorded(recorder: Recorder, contract: Contract) -> None:
    assert len(recorder.responses) == 6
    with pytest.raises(ContractError) as caught:
        recorder.check_all(contract)
    prefix = "GET /v1/models/mattt/empty -> 200: $.visibility: "
    assert [str(v) for v in caught.value.violations] == [
        f"{prefix}'secret' is not one of ['public', 'private']",
        f"{prefix}[py-client] 'secret' is not one of ['public', 'private']",
    ]
    assert {r.path for r in recorder.skipped} == {"/stream/x", "/outputs/x.png"}
    recorder.responses = [r for r in recorder.responses if r.path != "/v1/models/mattt/empty"]
    assert recorder.check_all(contract) == {"account.get", "predictions.get", "deployments.delete"}


def test_recorder_sync(contract: Contract) -> None:
    recorder = Recorder()
    with recorder.attach(
        httpx.Client(transport=httpx.MockTransport(_app), base_url="https://yard.example")
    ) as client:
        for path in _GETS:
            client.get(path)
        client.delete("/v1/deployments/a/b")
        with client.stream("GET", "/stream/x") as response:
            assert "event: done" in response.read().decode()
    _expect_recorded(recorder, contract)


async def test_recorder_async(contract: Contract) -> None:
    recorder = Recorder()
    async with recorder.attach(
        httpx.AsyncClient(transport=httpx.MockTransport(_app), base_url="https://yard.example")
    ) as client:
        for path in (*_GETS, "/stream/x"):
            await client.get(path)
        await client.delete("/v1/deployments/a/b")
    _expect_recorded(recorder, contract)


def test_client_checks_agree_with_replicate_models() -> None:
    """When replicate 1.0.7 is installed: what the checker passes, the client accepts, and the
    client rejects the bodies the [py-client] checks reject."""
    replicate = pytest.importorskip("replicate")
    from pydantic import v1
    from replicate.file import File
    from replicate.model import Model
    from replicate.training import _json_to_training
    from replicate.version import Version

    assert replicate.__about__.__version__ == "1.0.7"
    Model(**changed(MODEL, latest_version=VERSION, default_example=PREDICTION))
    File(**FILE)
    _json_to_training(None, TRAINING)  # type: ignore[arg-type]
    for model, body in [
        (File, changed(FILE, etag=...)),
        (Version, changed(VERSION, cog_version=None)),
        (Model, changed(MODEL, default_example=changed(PREDICTION, status="aborted"))),
        (Model, changed(MODEL, default_example=changed(PREDICTION, urls__stream=None))),
    ]:
        with pytest.raises(v1.ValidationError):
            model(**body)
    with pytest.raises(ValueError, match="Invalid reference"):
        _json_to_training(None, changed(TRAINING, output={"version": VERSION_ID}))  # type: ignore[arg-type]
