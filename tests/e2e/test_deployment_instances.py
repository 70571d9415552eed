"""Instance control of a deployment against a live server: `min_instances` warm before any
prediction (and again after a restart), a lower `max_instances` stopping the surplus, a new
release draining the old pool (its predictions finish there, then it closes), a per-deployment
`idle_timeout` (422 on a bad one), and the deployment page showing the instances to its owner.

States are read from `GET /v1/deployments/{owner}/{name}` (`instances`, from the instances
table); every wait is bounded (`eventually`). The model is tests/fixtures/healthcheck (`seconds`
keeps a prediction busy), pushed twice with different content for two versions.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from live import LiveServer, Tls, fixture_package
from predicting import eventually, wait_for

DEPLOYMENT = "/v1/deployments/admin/warm"
PAGE = "/settings/deployments/admin/warm"  # the web page (/deployments/... is the API's too)
PASSWORD = "admin's password"
TERMINAL = {"succeeded", "failed", "canceled"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    live = LiveServer(
        data_dir=tmp_path_factory.mktemp("deployment-instances"),
        tls=tls,
        env={"MODELYARD_HEALTHCHECK_INTERVAL": "0"},  # states only; health has its own tests
    ).start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def versions(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """admin/kept with two versions of the healthcheck fixture (the second differs by a line)."""
    first = server.push(fixture_package("healthcheck"), "admin/kept")
    copy = tmp_path_factory.mktemp("second") / "healthcheck"
    shutil.copytree(fixture_package("healthcheck"), copy)
    with open(copy / "predict.py", "a") as source:
        source.write("# the second version\n")
    return first, server.push(copy, "admin/kept")


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with server.http() as client:
        yield client


def deployment(http: httpx.Client) -> dict[str, Any]:
    response = http.get(DEPLOYMENT)
    assert response.status_code == 200, response.text
    return dict(response.json())


def instances_are(http: httpx.Client, want: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The deployment's instances once their sorted (state, version) pairs are `want`."""

    def seen() -> list[dict[str, Any]] | None:
        found = deployment(http)["instances"]
        pairs = sorted((i["state"], i["version"]) for i in found)
        return found if pairs == sorted(want) else None

    return list(eventually(seen, f"instances {want}"))


def patch(http: httpx.Client, **changes: Any) -> dict[str, Any]:
    response = http.patch(DEPLOYMENT, json=changes)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_instance_control(
    server: LiveServer, http: httpx.Client, versions: tuple[str, str]
) -> None:
    first, second = versions
    made = http.post(
        "/v1/deployments",
        json={"name": "warm", "model": "admin/kept", "version": first, "hardware": "cpu",
              "min_instances": 1, "max_instances": 2, "idle_timeout": 0.5},
    )  # fmt: skip
    assert made.status_code == 200, made.text
    configuration = made.json()["current_release"]["configuration"]
    assert configuration == {
        "hardware": "cpu", "min_instances": 1, "max_instances": 2, "idle_timeout": 0.5
    }  # fmt: skip

    # min_instances: booted ahead of demand (no prediction was made), with its SKU and age.
    (warm,) = instances_are(http, [("idle", first)])
    assert warm["hardware"] == "cpu" and warm["uptime_seconds"] >= 0 and warm["started_at"]

    # Two at once take both instances; past the 0.5 s idle timeout the minimum (1) stays.
    runs = [http.post(f"{DEPLOYMENT}/predictions", json={"input": {"seconds": 1}}) for _ in "ab"]
    for run in runs:
        assert run.status_code == 201, run.text
        assert wait_for(http, run.json()["id"], TERMINAL)["status"] == "succeeded"
    instances_are(http, [("idle", first)])

    # min 2 boots a second one; max lowered to 1 stops the surplus once idle.
    patch(http, min_instances=2, max_instances=2)
    instances_are(http, [("idle", first), ("idle", first)])
    patch(http, min_instances=1, max_instances=1)
    instances_are(http, [("idle", first)])

    # A new release on another version: what the old pool holds finishes there, then it
    # closes; the new version's minimum is booted.
    busy = http.post(f"{DEPLOYMENT}/predictions", json={"input": {"seconds": 2}}).json()
    wait_for(http, busy["id"], {"processing", *TERMINAL})
    queued = http.post(f"{DEPLOYMENT}/predictions", json={"input": {}}).json()
    assert patch(http, version=second)["current_release"]["version"] == second
    for prediction in (busy, queued):
        done = wait_for(http, prediction["id"], TERMINAL)
        assert (done["status"], done["version"]) == ("succeeded", first), done
    instances_are(http, [("idle", second)])
    after = http.post(f"{DEPLOYMENT}/predictions", json={"input": {}}).json()
    assert wait_for(http, after["id"], TERMINAL)["version"] == second

    # After a restart the minimum is booted again, before any prediction.
    server.restart()
    with server.http() as fresh:
        instances_are(fresh, [("idle", second)])


def test_idle_timeout_is_checked_and_shown(
    server: LiveServer, http: httpx.Client, versions: tuple[str, str]
) -> None:
    if http.get(DEPLOYMENT).status_code == 404:
        made = http.post(
            "/v1/deployments",
            json={"name": "warm", "model": "admin/kept", "version": versions[0],
                  "hardware": "cpu", "min_instances": 0, "max_instances": 1},
        )  # fmt: skip
        assert made.status_code == 200, made.text
    for bad in (0, -1, "10", True, 10**9):
        response = http.patch(DEPLOYMENT, json={"idle_timeout": bad})
        assert response.status_code == 422, (bad, response.text)
        assert "idle_timeout" in response.text
    for raw in ("NaN", "Infinity", "1e400"):  # what Python's JSON reader turns into floats
        response = http.patch(
            DEPLOYMENT,
            content=f'{{"idle_timeout": {raw}}}',
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 422, (raw, response.text)
    body = {"name": "other", "model": "admin/kept", "version": versions[0], "hardware": "cpu",
            "min_instances": 0, "max_instances": 1, "idle_timeout": -5}  # fmt: skip
    refused = http.post("/v1/deployments", json=body)
    assert refused.status_code == 422 and "idle_timeout" in refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")

    assert patch(http, idle_timeout=90)["current_release"]["configuration"]["idle_timeout"] == 90
    # Another change keeps it; null brings the server's default (300 s) back.
    kept = patch(http, max_instances=1)["current_release"]["configuration"]
    assert kept["idle_timeout"] == 90
    default = patch(http, idle_timeout=None)["current_release"]["configuration"]
    assert default["idle_timeout"] == 300


def test_the_deployment_page_shows_its_owner_the_instances(
    server: LiveServer, http: httpx.Client, versions: tuple[str, str]
) -> None:
    if http.get(DEPLOYMENT).status_code == 404:
        made = http.post(
            "/v1/deployments",
            json={"name": "warm", "model": "admin/kept", "version": versions[1],
                  "hardware": "cpu", "min_instances": 1, "max_instances": 1},
        )  # fmt: skip
        assert made.status_code == 200, made.text
    patch(http, min_instances=1, max_instances=1, idle_timeout=120)
    version = deployment(http)["current_release"]["version"]
    (instance,) = instances_are(http, [("idle", version)])
    server.cli("password", "admin", "--password", PASSWORD)
    server.cli("token", "create", "--username", "mallory")
    server.cli("password", "mallory", "--password", PASSWORD)

    with signed_in(server, "admin") as page:
        assert 'href="/settings/deployments"' in page.get("/settings").text
        listed = page.get("/settings/deployments").text
        assert 'href="/settings/deployments/admin/warm"' in listed
        html = page.get(PAGE).text
        assert f'data-instance="{instance["id"]}"' in html
        assert '<span class="state state-idle">idle</span>' in html and "<td>cpu</td>" in html
        assert '<span class="count count-idle">1 idle</span>' in html
        assert '<td data-field="min_instances">1</td>' in html
        assert '<td data-field="idle_timeout">120.0 s</td>' in html
    with signed_in(server, "mallory") as page:
        assert page.get(PAGE).status_code == 404  # another account's: as if it did not exist
    with httpx.Client(base_url=server.url, verify=server.tls.context()) as anonymous:
        assert anonymous.get(PAGE).status_code == 303  # sign in first


@contextmanager
def signed_in(server: LiveServer, username: str) -> Iterator[httpx.Client]:
    """A cookie-keeping client, signed in as `username`."""
    with httpx.Client(base_url=server.url, verify=server.tls.context(), timeout=60) as client:
        form = {"username": username, "password": PASSWORD, "next": "/"}
        response = client.post("/signin", data=form)
        assert response.status_code == 303, response.text
        yield client
