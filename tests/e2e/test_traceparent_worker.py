"""The caller's W3C trace context reaches the worker, as Cog carries it into its worker: model
code reads it in `cog.current_scope().context` (tests/fixtures/scope_context returns that map).
A prediction created without one gets an empty context, as before. And the local backend
reports how long `setup()` took (`modelyard_instance_setup_seconds`)."""

from __future__ import annotations

import time

from live import LiveServer, fixture_package
from prometheus_client.parser import text_string_to_metric_families

LIMIT = 120.0  # only stops a hung test
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_the_worker_sees_the_trace_context(server: LiveServer) -> None:
    version = server.push(fixture_package("scope_context"), "admin/scope-context")
    outputs = []
    with server.http() as client:
        for headers in (
            {"traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE"},
            {"traceparent": "malformed"},
            {},
        ):
            created = client.post(
                "/v1/predictions", json={"version": version, "input": {}}, headers=headers
            )
            assert created.status_code == 201, created.text
            body = created.json()
            deadline = time.monotonic() + LIMIT
            while body["status"] not in ("succeeded", "failed", "canceled"):
                assert time.monotonic() < deadline, body
                time.sleep(0.1)
                body = client.get(f"/v1/predictions/{body['id']}").json()
            assert body["status"] == "succeeded", body
            outputs.append(body["output"])
        metrics = client.get("/metrics").text
    assert outputs == [
        {"traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE"},
        {},
        {},
    ]
    # One boot, whose setup() LocalInstance measured (the figure is wall-clock: not checked).
    setups = [
        s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == "modelyard_instance_setup_seconds_count"
        and s.labels["model"] == "admin/scope-context"
    ]
    assert setups == [1.0]
