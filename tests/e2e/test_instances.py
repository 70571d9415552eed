"""A model's instances and their latest healthcheck, as its owner sees them: through the API
(`instances` in `GET /v1/models/{owner}/{name}`, a field the official clients ignore) and on
the model page, and hidden from everyone else.

The server checks health every 0.3 s (`MODELYARD_HEALTHCHECK_INTERVAL`) and never replaces an
unhealthy instance here (`MODELYARD_HEALTHCHECK_REPLACE_AFTER=0`: replacement has its own test
in tests/engine/test_healthchecks.py). The model is tests/fixtures/healthcheck: a prediction
with `healthy=false` makes its `healthcheck()` return False from then on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from contract_support import Recorder
from live import LiveServer, Tls, fixture_package
from predicting import eventually, start, wait_for

PASSWORD = "carol's password"
BOB_PASSWORD = "bob's password"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    live = LiveServer(
        data_dir=tmp_path_factory.mktemp("instances"),
        tls=tls,
        env={
            "MODELYARD_HEALTHCHECK_INTERVAL": "0.3",
            "MODELYARD_HEALTHCHECK_REPLACE_AFTER": "0",
        },
    ).start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def carol(server: LiveServer) -> str:
    """The model's owner (an ordinary account: the admin made the first token)."""
    token = server.cli("token", "create", "--username", "carol").strip()
    server.cli("password", "carol", "--password", PASSWORD)
    return token


@pytest.fixture(scope="module")
def checked(server: LiveServer, carol: str) -> str:
    """tests/fixtures/healthcheck as carol/checked, public; its version id."""
    version = server.push(fixture_package("healthcheck"), "carol/checked", token=carol)
    with server.http(carol) as api:
        assert api.patch("/v1/models/carol/checked", json={"visibility": "public"}).is_success
    return version


def model(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/v1/models/carol/checked")
    assert response.status_code == 200, response.text
    return response.json()


def run(client: httpx.Client, version: str, **inputs: Any) -> None:
    prediction = start(client, version, **inputs)
    done = wait_for(client, prediction["id"], {"succeeded", "failed", "canceled"})
    assert done["status"] == "succeeded", done


def health_of(client: httpx.Client, status: str) -> dict[str, Any]:
    """The model's one instance once its latest health is `status`."""

    def seen() -> dict[str, Any] | None:
        instances = model(client)["instances"]
        if len(instances) == 1 and (instances[0]["health"] or {}).get("status") == status:
            return dict(instances[0])
        return None

    return dict(eventually(seen, f"an instance whose health is {status}"))


def test_the_owner_sees_its_instances_and_their_health_others_do_not(
    server: LiveServer, carol: str, checked: str, recorder: Recorder, bob_http: httpx.Client
) -> None:
    with recorder.attach(server.http(carol)) as owner, recorder.attach(server.http()) as admin:
        assert model(owner)["instances"] == []  # nothing has run yet
        assert "instances" not in model(bob_http)  # another account sees the model, not those

        run(owner, checked)
        healthy = health_of(owner, "READY")
        assert healthy["state"] == "idle" and healthy["hardware"] == "cpu"
        assert healthy["version"] == checked and healthy["mode"] == "predict"
        assert healthy["health"]["error"] is None and healthy["health"]["checked_at"]
        assert healthy["started_at"] and healthy["uptime_seconds"] >= 0

        run(owner, checked, healthy=False)  # its healthcheck() says False from now on
        sick = health_of(owner, "UNHEALTHY")
        assert sick["id"] == healthy["id"]  # shown, not replaced (replacement is off here)
        assert sick["health"]["error"] == "user-defined healthcheck returned False"

        assert [i["id"] for i in model(admin)["instances"]] == [sick["id"]]  # admins see too
        assert "instances" not in model(bob_http)

    # The official client reads the model as ever (it ignores the field).
    official = server.replicate(carol).models.get("carol/checked")
    assert official.latest_version is not None and official.latest_version.id == checked


def test_the_model_page_shows_the_owner_its_instances(
    server: LiveServer, carol: str, checked: str
) -> None:
    with server.http(carol) as owner:
        run(owner, checked, healthy=False)
        health_of(owner, "UNHEALTHY")
    server.cli("password", "bob", "--password", BOB_PASSWORD)

    with signed_in(server, "carol", PASSWORD) as page:
        html = page.get("/carol/checked").text
        assert 'id="instances"' in html and 'href="#instances"' in html
        assert "UNHEALTHY" in html and "user-defined healthcheck returned False" in html
        assert '<span class="state state-idle">idle</span>' in html
    with signed_in(server, "bob", BOB_PASSWORD) as page:
        html = page.get("/carol/checked").text
        assert "carol/checked" in html and 'id="instances"' not in html
    with browser(server) as anonymous:
        html = anonymous.get("/carol/checked").text
        assert "carol/checked" in html and 'id="instances"' not in html


def browser(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, verify=server.tls.context(), timeout=60)


@contextmanager
def signed_in(server: LiveServer, username: str, password: str) -> Iterator[httpx.Client]:
    """A cookie-keeping client, signed in as `username`."""
    with browser(server) as client:
        form = {"username": username, "password": password, "next": "/"}
        response = client.post("/signin", data=form)
        assert response.status_code == 303, response.text
        yield client


def test_a_deployments_instances_are_recorded_apart_from_the_models(
    server: LiveServer, carol: str, checked: str
) -> None:
    """The table has a deployment's instances under its id, the deployment's JSON lists them to
    its owner, and the model's own list does not show them."""
    from test_models import store

    from modelyard.store.deployments import get_deployment
    from modelyard.store.instances import instances_of

    with server.http(carol) as owner:
        created = owner.post(
            "/v1/deployments",
            json={"name": "dep", "model": "carol/checked", "version": checked,
                  "hardware": "cpu", "min_instances": 0, "max_instances": 1},
        )  # fmt: skip
        assert created.status_code == 200, created.text  # Replicate answers 200
        own = {i["id"] for i in model(owner)["instances"]}
        response = owner.post("/v1/deployments/carol/dep/predictions", json={"input": {}})
        assert response.status_code == 201, response.text
        done = wait_for(owner, response.json()["id"], {"succeeded", "failed", "canceled"})
        assert done["status"] == "succeeded", done

        def recorded() -> list[Any]:
            with store(server) as session:
                found = get_deployment(session, "carol", "dep")
                assert found is not None
                # its SKU is known once the backend made it (a booting one has none yet)
                views = instances_of(session, deployment_id=found.deployment.id)
                return [view for view in views if view.hardware]

        (instance,) = eventually(recorded, "the deployment's instance in the table")
        assert instance.version_id == checked and instance.hardware == "cpu"
        assert instance.id not in own
        assert {i["id"] for i in model(owner)["instances"]} == own
        listed = owner.get("/v1/deployments/carol/dep").json()["instances"]
        assert [(i["id"], i["hardware"]) for i in listed] == [(instance.id, "cpu")]
