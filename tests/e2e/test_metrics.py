"""`GET /metrics` of a live server after real predictions: the Prometheus text is parsed with
prometheus_client's own parser and its figures are checked against what was run (counts and
labels, never durations). And who may read it: loopback clients, else an admin's token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from live import PACKAGES, LiveServer
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from webhook_receiver import Receiver

LIMIT = 120.0  # only stops a hung test
TERMINAL = {"succeeded", "failed", "canceled"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver(limit=LIMIT).serving() as found:
        yield found


def scrape(client: httpx.Client) -> list[Sample]:
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return [s for family in text_string_to_metric_families(answer.text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sample `name` whose labels include `labels` (0 when there is none)."""
    found = [s for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) <= 1, found
    return found[0].value if found else 0.0


def scrape_until(client: httpx.Client, done: Callable[[list[Sample]], bool]) -> list[Sample]:
    """Scrapes until `done` holds (what is counted after a commit or a webhook's record)."""
    deadline = time.monotonic() + LIMIT
    while True:
        samples = scrape(client)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def run(client: httpx.Client, version: str, **extra: object) -> dict:
    created = client.post(
        "/v1/predictions",
        json={"version": version, "input": {}, **extra},
        headers={"Prefer": "wait=60"},
    )
    assert created.status_code in (201, 202), created.text
    body = created.json()
    deadline = time.monotonic() + LIMIT
    while body["status"] not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.1)
        body = client.get(f"/v1/predictions/{body['id']}").json()
    assert body["status"] in TERMINAL, body
    return body


def test_metrics_count_what_ran(server: LiveServer, receiver: Receiver) -> None:
    noop = server.push(PACKAGES / "noop", "admin/noop")
    broken = server.push(PACKAGES / "bad_setup", "admin/broken")
    with server.http() as client:
        before = scrape(client)  # nothing ran: the families exist, with no samples of a model
        assert value(before, "modelyard_predictions_completed_total", model="admin/noop") == 0
        first = run(client, noop)
        second = run(client, noop, webhook=receiver.url, webhook_events_filter=["completed"])
        failed = run(client, broken)
        assert (first["status"], second["status"], failed["status"]) == (
            "succeeded", "succeeded", "failed",
        )  # fmt: skip
        receiver.wait_for_prediction(second["id"], lambda hits: len(hits) == 1)
        samples = scrape_until(
            client,
            lambda s: value(s, "modelyard_webhook_deliveries_total", event="completed") == 1,
        )

    noop_labels = {"model": "admin/noop", "kind": "prediction"}
    ok = {**noop_labels, "status": "succeeded"}
    assert value(samples, "modelyard_predictions_completed_total", **ok) == 2
    assert value(samples, "modelyard_prediction_duration_seconds_count", **ok) == 2
    assert value(samples, "modelyard_prediction_duration_seconds_bucket", **ok, le="+Inf") == 2
    assert value(samples, "modelyard_queue_wait_seconds_count", **noop_labels) == 2
    # Its boot failed, so it never started: it ended failed, with no duration or wait.
    bad = {"model": "admin/broken", "kind": "prediction"}
    assert value(samples, "modelyard_predictions_completed_total", **bad, status="failed") == 1
    assert value(samples, "modelyard_prediction_duration_seconds_count", **bad) == 0
    assert value(samples, "modelyard_queue_wait_seconds_count", **bad) == 0

    # One cold boot served both noop predictions; the broken model's boot failed.
    boots = "modelyard_instance_boot_seconds_count"
    assert value(samples, boots, model="admin/noop", hardware="cpu", outcome="ready") == 1
    assert value(samples, boots, model="admin/broken", hardware="cpu", outcome="failed") == 1
    # The noop instance stays warm (idle) until its idle timeout; nothing waits in a queue.
    assert value(samples, "modelyard_instances", model="admin/noop", state="idle") == 1
    assert value(samples, "modelyard_instances", model="admin/broken") == 0
    depth = [s for s in samples if s.name == "modelyard_queue_depth"]
    assert {s.labels["model"] for s in depth} >= {"admin/noop", "admin/broken"}
    assert {s.labels["version"] for s in depth} >= {noop, broken}
    assert all(s.value == 0 for s in depth)
    assert value(samples, "modelyard_jobs", state="running") == 0

    assert value(samples, "modelyard_webhook_deliveries_total", outcome="delivered") == 1
    # HTTP requests by route template: three creates answered 201 or 202.
    creates = [
        s
        for s in samples
        if s.name == "modelyard_http_requests_total"
        and s.labels["route"] == "/v1/predictions"
        and s.labels["method"] == "POST"
    ]
    assert sum(s.value for s in creates) == 3
    assert {s.labels["status"] for s in creates} <= {"201", "202"}
    # The ledger's rows, counted as they commit: the two noop predictions' active seconds are
    # their own predict_time, and their active and setup rows cost what the predictions show
    # (the first booted the instance; idle periods belong to no prediction).
    with server.http() as client:
        shown = [client.get(f"/v1/predictions/{p['id']}").json() for p in (first, second)]
    metered = {"model": "admin/noop", "hardware": "cpu", "phase": "active"}
    seconds = sum(p["metrics"]["predict_time"] for p in shown)
    assert value(samples, "modelyard_metered_seconds_total", **metered) == pytest.approx(seconds)
    cost = sum(p["cost"]["nanos"] for p in shown) / 1e9
    dollars = "modelyard_cost_dollars_total"
    setup = {**metered, "phase": "setup"}
    assert value(samples, dollars, **metered) + value(samples, dollars, **setup) == pytest.approx(
        cost
    )
    # Bounded labels: no prediction id anywhere.
    ids = {first["id"], second["id"], failed["id"]}
    assert not [s for s in samples if ids & set(s.labels.values())]


def test_who_may_read_the_metrics(server: LiveServer) -> None:
    """Loopback reads it; through a proxy (a forwarding header) it takes an admin's token."""
    bob = server.cli("token", "create", "--username", "metrics-bob").strip()
    proxied = {"X-Forwarded-For": "203.0.113.7"}
    with httpx.Client(base_url=server.url, verify=server.tls.context(), timeout=30) as anonymous:
        assert anonymous.get("/metrics").status_code == 200  # the test runs on loopback
        refused = anonymous.get("/metrics", headers=proxied)
        assert refused.status_code == 401
        assert refused.headers["content-type"].startswith("application/problem+json")
    with server.http(bob) as client:
        forbidden = client.get("/metrics", headers=proxied)
        assert forbidden.status_code == 403, forbidden.text
        assert "admin" in forbidden.json()["detail"]
    with server.http() as admin:
        assert admin.get("/metrics", headers={"Forwarded": "for=203.0.113.7"}).status_code == 200
