"""`POST /v1/models/{owner}/{name}/predictions` resolves the latest version from a cache (it is
on every such create): each change of the model's versions or visibility made through the API
shows in the very next create, against a live server."""

from __future__ import annotations

from typing import Any

import httpx
from live import LiveServer, fixture_package

MODEL = "admin/latest-cache"
WAIT = {"Prefer": "wait=30"}


def run(http: httpx.Client, model: str = MODEL, status: int = 201) -> dict[str, Any]:
    response = http.post(
        f"/v1/models/{model}/predictions", json={"input": {"name": "abc"}}, headers=WAIT
    )
    assert response.status_code == status, response.text
    return response.json()


def test_pushes_deletes_and_visibility_show_in_the_next_create(
    server: LiveServer, bob: str
) -> None:
    first = server.push(fixture_package("output_str"), MODEL)  # private when pushed
    with server.http() as admin, server.http(bob) as other:
        done = run(admin)
        assert (done["version"], done["output"]) == (first, "hello abc")
        run(other, status=404)  # private: not even said to exist

        second = server.push(fixture_package("output_int"), MODEL)
        done = run(admin)
        assert (done["version"], done["output"]) == (second, 21)
        assert admin.delete(f"/v1/models/{MODEL}/versions/{second}").status_code == 202
        assert run(admin)["version"] == first

        assert admin.patch(f"/v1/models/{MODEL}", json={"visibility": "public"}).is_success
        assert run(other)["version"] == first
        assert admin.patch(f"/v1/models/{MODEL}", json={"visibility": "private"}).is_success
        run(other, status=404)


def test_a_model_without_versions_and_a_deleted_one(server: LiveServer) -> None:
    model = "admin/latest-cache-gone"
    version = server.push(fixture_package("output_str"), model)
    with server.http() as admin:
        assert run(admin, model)["version"] == version
        assert admin.delete(f"/v1/models/{model}/versions/{version}").status_code == 202
        assert "version" in run(admin, model, 422)["detail"]
        assert admin.delete(f"/v1/models/{model}").status_code == 204
        run(admin, model, 404)
        server.push(fixture_package("output_str"), model)  # the name is free again
        assert run(admin, model)["version"] == version  # (a version's id is its content's hash)
