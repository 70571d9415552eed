"""A webhook receiver for tests: a plain HTTP server on loopback, in a thread, that records every
POST and answers with the statuses a test queues (then `default`); 3xx answers point at /moved.

Used by the engine's outbox tests and the live-server webhook tests; `limit` only stops a hung
test, no assertion depends on it.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Hit:
    """One POST as it arrived, and the status it was answered with."""

    path: str
    headers: dict[str, str]
    body: bytes
    answered: int

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records POSTs; answers with queued statuses, then `default`; 3xx point at /moved."""

    hits: list[Hit] = field(default_factory=list)
    answers: deque[int] = field(default_factory=deque)
    default: int = 200
    limit: float = 120.0
    changed: threading.Condition = field(default_factory=threading.Condition)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def answer(self, *statuses: int) -> None:
        self.answers.extend(statuses)

    def wait_for(self, done: Callable[[list[Hit]], bool]) -> list[Hit]:
        """Every hit so far, once `done(hits)` holds."""
        with self.changed:
            assert self.changed.wait_for(lambda: done(self.hits), self.limit), self.hits
            return list(self.hits)

    def of(self, prediction_id: str) -> list[Hit]:
        """The hits whose body is the prediction (or training) `prediction_id`."""
        with self.changed:
            return [h for h in self.hits if h.json()["id"] == prediction_id]

    def wait_for_prediction(
        self, prediction_id: str, done: Callable[[list[Hit]], bool]
    ) -> list[Hit]:
        """The hits about `prediction_id`, once `done` holds for them."""

        def ready() -> bool:
            return done([h for h in self.hits if h.json()["id"] == prediction_id])

        with self.changed:
            assert self.changed.wait_for(ready, self.limit), [h.json() for h in self.hits]
        return self.of(prediction_id)

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.changed:
                    status = receiver.answers.popleft() if receiver.answers else receiver.default
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.hits.append(Hit(self.path, headers, body, status))
                    receiver.changed.notify_all()
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("location", f"http://127.0.0.1:{receiver.port}/moved")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    @contextmanager
    def serving(self) -> Iterator[Receiver]:
        """Listen on a free loopback port until the block ends."""
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
