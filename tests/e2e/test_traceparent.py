"""W3C trace context through a live server, as Cog propagates it: the `traceparent` and
`tracestate` a create request carries go out on every webhook of that prediction (or training);
a malformed `traceparent` is ignored (no header is invented, the create never fails for it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from live import PACKAGES, LiveServer
from webhook_receiver import Hit, Receiver

LIMIT = 120.0  # only stops a hung test
TERMINAL = {"succeeded", "failed", "canceled"}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
EVERY_EVENT = ["start", "output", "logs", "completed"]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver(limit=LIMIT).serving() as found:
        yield found


@pytest.fixture(scope="module")
def noop(server: LiveServer) -> str:
    return server.push(PACKAGES / "noop", "admin/noop")


def create(client: httpx.Client, path: str, body: dict, headers: dict[str, str]) -> dict:
    answer = client.post(path, json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    return answer.json()


def completed(receiver: Receiver, prediction_id: str) -> list[Hit]:
    """Its hits, once the terminal one arrived."""
    return receiver.wait_for_prediction(
        prediction_id, lambda hits: any(h.json()["status"] in TERMINAL for h in hits)
    )


def test_every_webhook_carries_the_trace_context(
    server: LiveServer, receiver: Receiver, noop: str
) -> None:
    body = {"version": noop, "input": {}, "webhook": receiver.url,
            "webhook_events_filter": EVERY_EVENT}  # fmt: skip
    # Header names are case-insensitive; extra spaces around list-members are dropped.
    headers = {
        "Traceparent": TRACEPARENT,
        "tracestate": "rojo=00f067aa0ba902b7 , congo=t61rcWkgMzE",
    }
    with server.http() as client:
        prediction = create(client, "/v1/predictions", body, headers)
    hits = completed(receiver, prediction["id"])
    assert hits[0].json()["status"] == "starting"  # the start webhook too
    assert len(hits) >= 2
    for hit in hits:
        assert hit.headers["traceparent"] == TRACEPARENT
        assert hit.headers["tracestate"] == TRACESTATE
    assert "traceparent" not in hits[-1].json()  # the body stays the prediction's JSON


def test_a_traceparent_alone_goes_without_a_tracestate(
    server: LiveServer, receiver: Receiver, noop: str
) -> None:
    body = {"version": noop, "input": {}, "webhook": receiver.url}
    with server.http() as client:
        # A malformed tracestate is dropped; the traceparent stays.
        headers = {"traceparent": TRACEPARENT, "tracestate": "Not A Valid=List,=x"}
        prediction = create(client, "/v1/predictions", body, headers)
    for hit in completed(receiver, prediction["id"]):
        assert hit.headers["traceparent"] == TRACEPARENT
        assert "tracestate" not in hit.headers


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  # uppercase
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # v00 is 55 chars
        "not a traceparent",
        "",
    ],
)
def test_a_malformed_traceparent_is_ignored(
    server: LiveServer, receiver: Receiver, noop: str, traceparent: str
) -> None:
    body = {"version": noop, "input": {}, "webhook": receiver.url}
    headers = {"traceparent": traceparent, "tracestate": TRACESTATE}
    with server.http() as client:
        prediction = create(client, "/v1/predictions", body, headers)  # never a 4xx
    for hit in completed(receiver, prediction["id"]):
        assert "traceparent" not in hit.headers  # not passed on, and no new trace invented
        assert "tracestate" not in hit.headers  # meaningless without its traceparent


def test_a_training_carries_it_too(server: LiveServer, receiver: Receiver) -> None:
    trainer = server.push(PACKAGES / "trainer", "admin/trace-trainer")
    with server.http() as client:
        made = client.post(
            "/v1/models",
            json={"owner": "admin", "name": "trace-trained", "visibility": "private",
                  "hardware": "cpu"},
        )  # fmt: skip
        assert made.status_code == 201, made.text
        training = create(
            client,
            f"/v1/models/admin/trace-trainer/versions/{trainer}/trainings",
            {"destination": "admin/trace-trained", "input": {}, "webhook": receiver.url},
            {"traceparent": TRACEPARENT},
        )
    hits = completed(receiver, training["id"])
    assert hits[-1].json()["status"] == "succeeded", hits[-1].json()
    assert all(hit.headers["traceparent"] == TRACEPARENT for hit in hits)


def test_a_retried_webhook_keeps_it(server: LiveServer, noop: str) -> None:
    """A terminal webhook tried again (its first try answered 500) carries the same headers."""
    with Receiver(limit=LIMIT).serving() as flaky:
        flaky.answer(500)
        body = {"version": noop, "input": {}, "webhook": flaky.url,
                "webhook_events_filter": ["completed"]}  # fmt: skip
        with server.http() as client:
            prediction = create(client, "/v1/predictions", body, {"traceparent": TRACEPARENT})
        deadline = time.monotonic() + LIMIT
        while len(flaky.of(prediction["id"])) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        hits = flaky.of(prediction["id"])
    assert [h.answered for h in hits[:2]] == [500, 200]
    assert [h.headers["webhook-id"] for h in hits[:2]] == [f"msg_{prediction['id']}_completed"] * 2
    assert all(h.headers["traceparent"] == TRACEPARENT for h in hits)


def test_after_a_restart_the_stored_context_is_sent(server: LiveServer, noop: str) -> None:
    """A terminal webhook still pending when the server is killed goes out after the restart
    with the trace context read back from the database (nothing of it was kept in memory)."""
    with Receiver(limit=LIMIT).serving() as failing:
        failing.default = 500
        body = {"version": noop, "input": {}, "webhook": failing.url,
                "webhook_events_filter": ["completed"]}  # fmt: skip
        headers = {"traceparent": TRACEPARENT, "tracestate": TRACESTATE}
        with server.http() as client:
            prediction = create(client, "/v1/predictions", body, headers)
        failing.wait_for_prediction(prediction["id"], lambda hits: len(hits) >= 1)
        server.kill()
        failing.default = 200
        server.start()
        hits = failing.wait_for_prediction(
            prediction["id"], lambda hits: any(h.answered == 200 for h in hits)
        )
    assert [h.answered for h in hits][-1] == 200
    for hit in hits:
        assert (hit.headers["traceparent"], hit.headers["tracestate"]) == (TRACEPARENT, TRACESTATE)
