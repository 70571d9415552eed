"""Hostile request bodies (issue 13): strings that are not Unicode, bodies too large or nested too
deep, model texts and file metadata past their limits. Each answers 4xx problem+json naming the
field, and stores nothing: the caller's lists stay readable and the next good request works.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from hostile import JSON, api, push, raw_json

from modelyard.api.limits import (
    DESCRIPTION_MAX,
    MAX_BODY,
    MAX_DEPTH,
    METADATA_MAX,
    README_MAX,
    WEBHOOK_MAX,
)

__all__ = ["api"]
pytestmark = pytest.mark.asyncio(loop_scope="session")

SURROGATE = "\\ud800"  # the JSON escape of a lone surrogate: valid JSON, not valid Unicode


def fields(answer: httpx.Response) -> list[str]:
    assert answer.headers["content-type"].startswith("application/problem+json"), answer.text
    return [f["field"] for f in answer.json()["invalid_fields"]]


async def nothing_stored(client: httpx.AsyncClient) -> None:
    for path in ("/v1/predictions", "/v1/files"):
        listed = await client.get(path)
        assert listed.status_code == 200, listed.text
        assert listed.json()["results"] == []


async def test_a_lone_surrogate_in_an_input_is_a_422_and_nothing_is_stored(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    version = await push(api, tmp_path)
    answer = await api.post(
        "/v1/predictions",
        **raw_json(f'{{"version": "{version}", "input": {{"tag": "{SURROGATE}"}}}}'),
    )
    assert answer.status_code == 422 and fields(answer) == ["input.tag"]
    keyed = await api.post(
        "/v1/predictions",
        **raw_json(f'{{"version": "{version}", "input": {{"tag": "t", "x{SURROGATE}": 1}}}}'),
    )
    assert keyed.status_code == 422 and fields(keyed) == ["input"]
    await nothing_stored(api)
    # The model is not stuck: a good prediction is stored and answered.
    good = await api.post("/v1/predictions", json={"version": version, "input": {"tag": "ok"}})
    assert good.status_code == 201, good.text
    assert (await api.get("/v1/predictions")).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/models", {"owner": "admin", "name": "m", "visibility": "private",
                        "hardware": "cpu", "description": "@"}, "description"),
        ("/v1/models/admin/slow", {"readme": "@"}, "readme"),
        ("/v1/models/admin/slow", {"description": "@"}, "description"),
        ("/v1/models/admin/slow", {"github_url": "https://x/@"}, "github_url"),
        ("/v1/deployments", {"name": "@", "model": "admin/slow", "version": "v",
                             "hardware": "cpu", "min_instances": 0, "max_instances": 1}, "name"),
        ("/v1/predictions", {"version": "@", "input": {}}, "version"),
        ("/v1/predictions", {"version": "v", "input": {}, "webhook": "https://x/@"}, "webhook"),
    ],
)  # fmt: skip
async def test_a_lone_surrogate_in_any_text_field_is_a_422_naming_it(
    api: httpx.AsyncClient, tmp_path: Path, path: str, body: dict, field: str
) -> None:
    await push(api, tmp_path)
    text = json.dumps(body).replace("@", SURROGATE)
    method = api.patch if path.count("/") == 4 else api.post
    answer = await method(path, **raw_json(text))
    assert answer.status_code == 422 and fields(answer) == [field]
    model = (await api.get("/v1/models/admin/slow")).json()
    assert model["description"] is None and model["github_url"] is None
    assert (await api.get("/v1/models/admin/slow/readme")).status_code == 404
    assert (await api.get("/v1/deployments")).json()["results"] == []
    await nothing_stored(api)


async def test_a_body_over_the_limit_is_a_413(api: httpx.AsyncClient) -> None:
    big = json.dumps({"version": "v", "input": {"tag": "x" * (MAX_BODY + 1)}})
    answer = await api.post("/v1/predictions", content=big, headers=JSON)
    assert answer.status_code == 413
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "16 MiB" in answer.json()["detail"]

    async def chunks() -> object:  # no Content-Length: the count is what stops it
        for _ in range(MAX_BODY // (1 << 20) + 2):
            yield b" " * (1 << 20)

    streamed = await api.post("/v1/predictions", content=chunks(), headers=JSON)
    assert streamed.status_code == 413
    # Any route, whatever the body's type: a route's own body is read in memory too.
    plain = await api.patch(
        "/v1/models/admin/x", content=b"x" * (MAX_BODY + 1), headers={"Content-Type": "text/plain"}
    )
    assert plain.status_code == 413
    await nothing_stored(api)
    # Uploads stream to disk under their own, larger limit.
    upload = await api.post("/v1/files", files={"content": ("big", b"x" * (MAX_BODY + 1))})
    assert upload.status_code == 201, upload.text


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000])
async def test_a_body_nested_too_deep_is_a_422(
    api: httpx.AsyncClient, tmp_path: Path, depth: int
) -> None:
    version = await push(api, tmp_path)
    nested = "[" * depth + "]" * depth
    answer = await api.post(
        "/v1/predictions", **raw_json(f'{{"version": "{version}", "input": {{"tag": {nested}}}}}')
    )
    assert answer.status_code == 422, answer.text
    [problem] = answer.json()["invalid_fields"]
    assert problem["type"] == "depth" and str(MAX_DEPTH) in problem["description"]
    # Where the parser could follow it, the field says where it became too deep.
    assert problem["field"].startswith("input.tag" if depth < 1000 else "body")
    await nothing_stored(api)


@pytest.mark.parametrize(
    ("field", "size", "status"),
    [
        ("description", DESCRIPTION_MAX, 200),
        ("description", DESCRIPTION_MAX + 1, 422),
        ("readme", README_MAX + 1, 422),
        ("github_url", 600, 422),
    ],
)
async def test_model_texts_have_limits(
    api: httpx.AsyncClient, tmp_path: Path, field: str, size: int, status: int
) -> None:
    await push(api, tmp_path)
    value = "https://example.com/" + "a" * (size - 20) if field.endswith("url") else "é" * size
    answer = await api.patch("/v1/models/admin/slow", json={field: value})
    assert answer.status_code == status, answer.text[:300]
    if status == 422:
        assert fields(answer) == [field]
        if field == "readme":
            assert (await api.get("/v1/models/admin/slow/readme")).status_code == 404
        else:
            assert (await api.get("/v1/models/admin/slow")).json()[field] is None


async def test_a_nul_in_a_stored_text_is_a_422(api: httpx.AsyncClient, tmp_path: Path) -> None:
    pushed = await push(api, tmp_path)
    answer = await api.patch("/v1/models/admin/slow", json={"description": "a\x00b"})
    assert answer.status_code == 422 and fields(answer) == ["description"]
    owner = await api.post("/v1/models", json={"owner": "ad\x00min", "name": "m",
                                               "visibility": "private", "hardware": "cpu"})  # fmt: skip
    assert owner.status_code == 422 and fields(owner) == ["owner"]
    version = await api.post("/v1/predictions", json={"version": "admin/slow\x00", "input": {}})
    assert version.status_code == 422 and fields(version) == ["version"]
    hook = "https://example.com/" + "a" * WEBHOOK_MAX
    webhook = await api.post(
        "/v1/predictions", json={"version": pushed, "input": {"tag": "t"}, "webhook": hook}
    )
    assert webhook.status_code == 422 and fields(webhook) == ["webhook"]
    await nothing_stored(api)


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ('{"a": "' + SURROGATE + '"}', "metadata.a"),
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "metadata"),
        ('{"a": ' + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "}", "metadata.a"),
        (json.dumps({"a": "x" * METADATA_MAX}), "metadata"),
    ],
)
async def test_bad_file_metadata_is_a_422_and_stores_nothing(
    api: httpx.AsyncClient, metadata: str, field: str
) -> None:
    for part in ((None, metadata), ("blob", metadata.encode(), "application/json")):  # Py, JS
        answer = await api.post(
            "/v1/files", files={"content": ("a.txt", b"hello", "text/plain"), "metadata": part}
        )
        assert answer.status_code == 422, answer.text[:300]
        assert [f.split(".")[0] for f in fields(answer)] == ["metadata"]
        assert fields(answer)[0].startswith(field)
    await nothing_stored(api)
    good = await api.post("/v1/files", files={"content": ("a.txt", b"hello", "text/plain"),
                                              "metadata": (None, '{"a": "é"}')})  # fmt: skip
    assert good.status_code == 201 and good.json()["metadata"] == {"a": "é"}
    assert (await api.get("/v1/files")).status_code == 200
