"""What the tests with real `modelyard serve` replicas share: create a prediction on one, wait
for it on any, and read the ledger that packages/tally writes (a line per start and cancel)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from e2e.live import LiveServer

TALLY = Path(__file__).parent / "packages" / "tally"
TERMINAL = {"succeeded", "failed", "canceled"}


def create(server: LiveServer, version: str, **body: Any) -> dict[str, Any]:
    with server.http() as client:
        answer = client.post("/v1/predictions", json={"version": version, **body})
    assert answer.status_code == 201, answer.text
    return answer.json()


def wait_for(
    server: LiveServer, prediction_id: str, statuses: set[str] = TERMINAL, timeout: float = 240
) -> dict[str, Any]:
    """The prediction as `server` answers for it, once its status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    with server.http() as client:
        while True:
            body = client.get(f"/v1/predictions/{prediction_id}").json()
            if body["status"] in statuses or time.monotonic() > deadline:
                assert body["status"] in statuses, body
                return body
            time.sleep(0.05)


def lines(ledger: Path) -> list[str]:
    return ledger.read_text().splitlines() if ledger.exists() else []
