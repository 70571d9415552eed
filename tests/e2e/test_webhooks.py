"""Webhooks from a live server: filters, signatures checked with the official client's
`replicate.webhooks.validate`, the terminal webhook's retries (no redirects followed), and a
SIGKILL restart that loses no pending terminal webhook.

The receiver (tests/webhook_receiver.py) is a plain HTTP server on loopback in a thread that
records every request and answers with the statuses a test chooses. Models that must be
mid-prediction wait on a gate file the test creates, so the order of events never depends on how
long anything takes.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import replicate
from live import PACKAGES, LiveServer, Tls, serving
from replicate.webhook import WebhookSigningSecret
from tests.contract.openapi import Contract, Recorder
from webhook_receiver import Hit, Receiver

TERMINAL = {"succeeded", "failed", "canceled"}
LIMIT = 120.0  # only stops a hung test


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(limit=LIMIT).serving() as found:
        yield found


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract.load()


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    """A second server whose terminal webhooks are retried after 0.2, 0.4 and 0.8 s."""
    with serving(tmp_path_factory, tls, "fast", "--webhook-retry-delays", "0.2,0.4,0.8") as live:
        live.push(PACKAGES / "noop", "admin/noop")
        yield live


def secret_of(server: LiveServer) -> WebhookSigningSecret:
    """The account's signing secret, as a receiver gets it: through the official client."""
    secret = server.replicate().webhooks.default.secret()
    assert secret.key.startswith("whsec_") and "_" not in secret.key[len("whsec_") :]
    return secret


def validate(hits: list[Hit], secret: WebhookSigningSecret) -> None:
    """Every hit is signed as the official client checks it, and shaped as its Prediction."""
    for hit in hits:
        replicate.webhooks.validate(headers=hit.headers, body=hit.body.decode(), secret=secret)
        assert hit.headers["content-type"] == "application/json"
        assert hit.headers["webhook-id"].startswith("msg_")
        replicate.prediction.Prediction(**hit.json())  # what a receiver's client would parse


def finished(hits: list[Hit]) -> bool:
    return any(h.json()["status"] in TERMINAL and h.answered == 200 for h in hits)


def poll(api: httpx.Client, prediction_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + LIMIT
    while (body := api.get(f"/v1/predictions/{prediction_id}").json())["status"] not in TERMINAL:
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    return body


# --- filters and signing ----------------------------------------------------------------------


def without_cost(body: dict[str, Any]) -> dict[str, Any]:
    """A GET's body less `cost`, which the terminal webhook cannot carry: its body is made before
    the ledger row commits (docs/billing.md)."""
    assert "cost" in body, "a finished prediction shows its cost"
    return {k: v for k, v in body.items() if k != "cost"}


def test_start_and_completed_are_signed_and_shaped_like_get(
    server: LiveServer, hello: str, receiver: Receiver, contract: Contract
) -> None:
    client = server.replicate()
    prediction = client.predictions.create(
        model="admin/hello",
        input={"name": "Ada", "repeat": 2},
        webhook=receiver.url,
        webhook_events_filter=["start", "completed"],
    )
    hits = receiver.wait_for_prediction(prediction.id, finished)
    validate(hits, secret_of(server))
    bodies = [h.json() for h in hits]
    assert [b["status"] for b in bodies] == ["starting", "succeeded"]  # nothing in between
    assert bodies[-1]["output"] == ["Hello, Ada! ", "Hello, Ada! "]
    assert bodies[-1]["webhook_events_filter"] == ["start", "completed"]
    recorder = Recorder()
    with recorder.attach(server.http()) as api:
        assert without_cost(api.get(f"/v1/predictions/{prediction.id}").json()) == bodies[-1]
    recorder.check_all(contract)
    for body in bodies:  # a webhook body passes the same checks as the GET it mirrors
        contract.check("GET", f"/v1/predictions/{prediction.id}", 200, body, "application/json")


def test_default_filter_sends_new_output_and_the_end(
    server: LiveServer, ticker: str, receiver: Receiver, tmp_path: Path
) -> None:
    gate = tmp_path / f"gate-{uuid.uuid4().hex}"
    client = server.replicate()
    prediction = client.predictions.create(
        version=ticker, input={"n": 3, "gate": str(gate)}, webhook=receiver.url
    )
    first = receiver.wait_for_prediction(prediction.id, lambda hits: len(hits) >= 1)[0].json()
    assert (first["status"], first["output"]) == ("processing", ["tick 0"])  # no `start`
    gate.touch()
    hits = receiver.wait_for_prediction(prediction.id, finished)
    validate(hits, secret_of(server))
    bodies = [h.json() for h in hits]
    assert bodies[-1]["status"] == "succeeded"
    assert bodies[-1]["output"] == ["tick 0", "tick 1", "tick 2"]
    assert all(b["output"] for b in bodies)  # every one was sent for new output (or the end)
    outputs = [len(b["output"]) for b in bodies]
    assert outputs == sorted(outputs)  # in order


def test_logs_are_throttled_and_the_latest_state_arrives(
    server: LiveServer, ticker: str, receiver: Receiver
) -> None:
    client = server.replicate()
    prediction = client.predictions.create(
        version=ticker, input={"n": 100}, webhook=receiver.url, webhook_events_filter=["logs"]
    )
    with server.http() as api:
        assert poll(api, prediction.id)["status"] == "succeeded"
    hits = receiver.wait_for_prediction(
        prediction.id, lambda h: any("log 99" in x.json()["logs"] for x in h)
    )
    logs = [h.json()["logs"] for h in hits]
    # 100 log lines arrive within moments of each other; at most one webhook per 500 ms
    # leaves, each carrying everything so far, so far fewer than 100 arrive.
    assert len(hits) < 50
    assert logs == sorted(logs, key=len) and "log 99" in logs[-1]
    assert all(h.json()["status"] != "starting" for h in hits)  # `start` was not asked for


def test_trainings_send_webhooks_like_predictions(
    fast: LiveServer, receiver: Receiver, contract: Contract
) -> None:
    trainer = fast.push(PACKAGES / "trainer", "admin/trainer")
    recorder = Recorder()
    with recorder.attach(fast.http()) as api:
        created = api.post(
            "/v1/models",
            json={"owner": "admin", "name": "trained", "visibility": "private", "hardware": "cpu"},
        )
        assert created.status_code == 201, created.text
        training = fast.replicate().trainings.create(
            version=f"admin/trainer:{trainer}",
            input={"word": "hook"},
            destination="admin/trained",
            webhook=receiver.url,
            webhook_events_filter=["start", "completed"],
        )
        hits = receiver.wait_for_prediction(training.id, finished)
        validate(hits, secret_of(fast))
        bodies = [h.json() for h in hits]
        assert [b["status"] for b in bodies] == ["starting", "succeeded"]
        assert bodies[-1]["output"]["version"].startswith("admin/trained:")
        assert without_cost(api.get(f"/v1/trainings/{training.id}").json()) == bodies[-1]
    recorder.check_all(contract)


# --- retries --------------------------------------------------------------------------------


def test_terminal_webhook_retried_intermediate_not(fast: LiveServer, receiver: Receiver) -> None:
    receiver.answer(500, 500, 502)  # start (one try only), then completed twice
    client = fast.replicate()
    prediction = client.predictions.create(
        model="admin/noop",
        input={},
        webhook=receiver.url,
        webhook_events_filter=["start", "completed"],
    )
    hits = receiver.wait_for_prediction(prediction.id, finished)
    validate(hits, secret_of(fast))
    assert [(h.json()["status"], h.answered) for h in hits] == [
        ("starting", 500),
        ("succeeded", 500),
        ("succeeded", 502),
        ("succeeded", 200),
    ]
    retries = hits[1:]
    assert len({h.headers["webhook-id"] for h in retries}) == 1  # the same message every time
    assert len({h.body for h in retries}) == 1
    assert hits[0].headers["webhook-id"] != hits[1].headers["webhook-id"]


def test_redirects_are_not_followed(fast: LiveServer, receiver: Receiver) -> None:
    receiver.answer(307, 308)
    client = fast.replicate()
    prediction = client.predictions.create(
        model="admin/noop", input={}, webhook=receiver.url, webhook_events_filter=["completed"]
    )
    hits = receiver.wait_for_prediction(prediction.id, finished)
    assert [(h.path, h.answered) for h in hits] == [("/hook", 307), ("/hook", 308), ("/hook", 200)]


def test_terminal_webhook_gives_up_after_the_last_delay(
    fast: LiveServer, receiver: Receiver
) -> None:
    receiver.default = 500
    client = fast.replicate()
    prediction = client.predictions.create(
        model="admin/noop", input={}, webhook=receiver.url, webhook_events_filter=["completed"]
    )
    # the try and 3 retries
    hits = receiver.wait_for_prediction(prediction.id, lambda h: len(h) >= 4)
    validate(hits, secret_of(fast))
    row = wait_for_row(fast, prediction.id, "abandoned_at IS NOT NULL")
    assert row["attempts"] == 4 and row["last_error"] == "HTTP 500"
    assert len(receiver.of(prediction.id)) == 4  # abandoned: no fifth try


def wait_for_row(server: LiveServer, prediction_id: str, condition: str) -> dict[str, Any]:
    """The outbox row, read from the server's database (the API does not show the outbox)."""
    deadline = time.monotonic() + LIMIT
    with sqlite3.connect(server.data_dir / "modelyard.db") as db:
        db.row_factory = sqlite3.Row
        while True:
            row = db.execute(
                f"SELECT * FROM webhook_deliveries WHERE prediction_id = ? AND {condition}",
                (prediction_id,),
            ).fetchone()
            if row is not None:
                return dict(row)
            assert time.monotonic() < deadline, f"no outbox row with {condition}"
            time.sleep(0.05)


# --- restart --------------------------------------------------------------------------------


def test_a_restart_loses_no_pending_terminal_webhook(
    server: LiveServer, hello: str, receiver: Receiver, tmp_path: Path
) -> None:
    """One terminal webhook is failing when the server is killed; another prediction is still
    running (it ends `failed` at the restart). Both terminal webhooks arrive after it."""
    slow = server.push(PACKAGES / "slow", "admin/slow")
    receiver.default = 500
    client = server.replicate()
    done = client.predictions.create(
        version=hello, input={"name": "Kay"}, webhook=receiver.url,
        webhook_events_filter=["completed"],
    )  # fmt: skip
    gate = tmp_path / "never"  # never created: the prediction runs until the kill
    running = client.predictions.create(
        version=slow, input={"tag": "r", "gate": str(gate)}, webhook=receiver.url,
        webhook_events_filter=["completed"],
    )  # fmt: skip
    receiver.wait_for_prediction(done.id, lambda hits: len(hits) >= 1)  # tried once, answered 500
    with server.http() as api:
        deadline = time.monotonic() + LIMIT
        while api.get(f"/v1/predictions/{running.id}").json()["status"] != "processing":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    message = receiver.of(done.id)[0].headers["webhook-id"]
    server.kill()
    before = len(receiver.hits)
    receiver.default = 200
    server.start()
    secret = secret_of(server)
    delivered = receiver.wait_for_prediction(done.id, finished)
    assert delivered[-1].headers["webhook-id"] == message  # the same message, after the restart
    assert delivered[-1].json()["output"] == ["Hello, Kay! "]
    failed = receiver.wait_for_prediction(running.id, finished)
    assert failed[-1].json()["status"] == "failed"
    assert "server stopped" in failed[-1].json()["error"]
    assert receiver.hits.index(delivered[-1]) >= before
    validate(delivered + failed, secret)


# --- malformed webhook fields ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"webhook": "ftp://example.com/hook"}, "webhook"),
        ({"webhook": 5}, "webhook"),
        ({"webhook": "https://example.com/hook", "webhook_events_filter": ["bogus"]},
         "webhook_events_filter.0"),
        ({"webhook": "https://example.com/hook", "webhook_events_filter": "start"},
         "webhook_events_filter"),
    ],
)  # fmt: skip
def test_malformed_webhook_fields_are_422_naming_the_field(
    server: LiveServer, hello: str, contract: Contract, body: dict[str, Any], field: str
) -> None:
    recorder = Recorder()
    with recorder.attach(server.http()) as api:
        before = len(api.get("/v1/predictions").json()["results"])
        answer = api.post("/v1/predictions", json={"version": hello, "input": {}, **body})
        assert answer.status_code == 422
        assert answer.headers["content-type"] == "application/problem+json"
        assert [f["field"] for f in answer.json()["invalid_fields"]] == [field]
        assert len(api.get("/v1/predictions").json()["results"]) == before  # nothing stored
    recorder.check_all(contract)


@pytest.mark.parametrize("url", ["https://", "https:///hook", "http://exa mple.com/hook"])
def test_webhook_urls_without_a_valid_host_are_422(
    server: LiveServer, hello: str, url: str
) -> None:
    with server.http() as api:
        answer = api.post("/v1/predictions", json={"version": hello, "input": {}, "webhook": url})
    assert answer.status_code == 422
    assert [f["field"] for f in answer.json()["invalid_fields"]] == ["webhook"]
