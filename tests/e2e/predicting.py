"""Small helpers for e2e tests that drive predictions over httpx: start one, wait for a status,
check the JSON shape the clients depend on. The waiting limits only stop a hung test."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from live import LiveServer

TERMINAL = {"succeeded", "failed", "canceled"}
STATUSES = TERMINAL | {"starting", "processing"}


def eventually(check: Callable[[], Any], what: str) -> Any:
    """Retry `check` until it returns something truthy; the limit only stops a hung test."""
    deadline = time.monotonic() + 120
    while not (result := check()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)
    return result


def get(client: httpx.Client, prediction_id: str) -> dict[str, Any]:
    return client.get(f"/v1/predictions/{prediction_id}").json()


def wait_for(client: httpx.Client, prediction_id: str, statuses: set[str]) -> dict[str, Any]:
    """GET the prediction until its status is one of `statuses`."""
    return eventually(
        lambda: (p := get(client, prediction_id))["status"] in statuses and p,
        f"{prediction_id} to be {statuses}",
    )


def start(client: httpx.Client, version: str, **input: Any) -> dict[str, Any]:
    """POST a prediction of `version` with `input`; it must be created (201)."""
    response = client.post("/v1/predictions", json={"version": version, "input": input})
    assert response.status_code == 201, response.text
    return response.json()


def check_shape(server: LiveServer, body: dict[str, Any]) -> None:
    """The JSON rules the clients depend on (replicate-api.md §2.1 and §6)."""
    assert body["status"] in STATUSES
    assert all(isinstance(url, str) for url in body["urls"].values()), body["urls"]
    for url in body["urls"].values():
        assert url.startswith(server.url + "/"), url
    assert {"get", "cancel", "web"} <= body["urls"].keys()
    if body["status"] in TERMINAL:
        assert body.get("completed_at")
        assert isinstance(body["metrics"]["total_time"], int | float)
        if body.get("started_at"):
            assert isinstance(body["metrics"]["predict_time"], int | float)
