"""The server's log: repeated warnings and errors are rate-limited, so a failure that repeats
(a full disk, a client retrying a request that fails) cannot fill the disk with tracebacks.

`RepeatFilter`, on a handler, lets the first `burst` records of the same kind through per
`window` seconds and counts the rest; when the window ends it writes one line saying how many
were left out. Records "of the same kind" come from the same line of code with the same message
template (before its arguments are put in) and the same exception type, so "events of %s not
written" for a thousand predictions is one kind. Records below WARNING always pass.

`logging_config()` is `modelyard serve`'s logging: uvicorn's own, plus a root handler for the
platform's loggers (they used Python's last-resort handler before, with the same format), with
the filter on every handler.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BURST = 5  # records of one kind let through per window
WINDOW = 60.0  # seconds

Key = tuple[str, int, str, int, str, str]


@dataclass
class _Kind:
    started: float
    # The first record of the window, for the summary: its place and its first line only (the
    # record itself would keep its traceback's frames alive for the whole window).
    name: str
    levelno: int
    pathname: str
    lineno: int
    first_line: str
    passed: int = 0
    suppressed: int = 0


class RepeatFilter(logging.Filter):
    """Lets `burst` records of each kind through per `window` seconds; then one summary line.

    Install it with `attach(handler)`: the summary is written through that handler."""

    def __init__(
        self,
        burst: int = BURST,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self.clock = clock
        self.handler: logging.Handler | None = None
        self._kinds: dict[Key, _Kind] = {}
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def attach(self, handler: logging.Handler) -> RepeatFilter:
        self.handler = handler
        handler.addFilter(self)
        return self

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or getattr(record, "repeat_summary", False):
            return True
        now = self.clock()
        key = _key(record)
        with self._lock:
            due = self._take_due(now)
            kind = self._kinds.get(key)
            if kind is None:
                kind = self._kinds[key] = _Kind(
                    now, record.name, record.levelno, record.pathname, record.lineno,
                    _first_line(record),
                )  # fmt: skip
            if kind.passed < self.burst:
                kind.passed += 1
                let_through = True
            else:
                kind.suppressed += 1
                let_through = False
                self._arm()
        self._emit(due)
        return let_through

    def flush(self) -> None:
        """Write the summaries of windows that have ended (the timer does this on its own)."""
        with self._lock:
            self._timer = None
            due = self._take_due(self.clock())
            if any(kind.suppressed for kind in self._kinds.values()):
                self._arm()
        self._emit(due)

    def _take_due(self, now: float) -> list[_Kind]:
        """Forget the kinds whose window has ended; those that left records out, to summarise."""
        ended = [key for key, kind in self._kinds.items() if now - kind.started >= self.window]
        return [kind for kind in map(self._kinds.pop, ended) if kind.suppressed]

    def _arm(self) -> None:
        """A timer for the next window's end, so a summary is written even when the records
        stop coming (called with the lock held)."""
        if self._timer is not None:
            return
        soonest = min(kind.started for kind in self._kinds.values())
        delay = max(0.0, soonest + self.window - self.clock()) + 0.01
        self._timer = threading.Timer(delay, self.flush)
        self._timer.daemon = True
        self._timer.start()

    def _emit(self, kinds: list[_Kind]) -> None:
        if self.handler is None:
            return
        for kind in kinds:
            self.handler.handle(_summary(kind, self.window))


def _key(record: logging.LogRecord) -> Key:
    error = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
    return (record.name, record.levelno, record.pathname, record.lineno, str(record.msg), error)


def _first_line(record: logging.LogRecord) -> str:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string is the original call's problem
        message = str(record.msg)
    return message.splitlines()[0][:500] if message else ""


def _summary(kind: _Kind, window: float) -> logging.LogRecord:
    times = "once" if kind.suppressed == 1 else f"{kind.suppressed} times"
    period = "minute" if window == 60 else f"{window:g} s"
    record = logging.LogRecord(
        kind.name, kind.levelno, kind.pathname, kind.lineno,
        "%s ... repeated %s in the last %s", (kind.first_line, times, period), None,
    )  # fmt: skip
    record.repeat_summary = True
    return record


def install(handler: logging.Handler, **options: Any) -> RepeatFilter:
    """Rate-limit what `handler` writes."""
    return RepeatFilter(**options).attach(handler)


def logging_config(base: dict[str, Any] | None = None) -> dict[str, Any]:
    """uvicorn's logging config (or `base`) with every handler rate-limited, and a root handler
    on stderr for the platform's own loggers (WARNING and up, the message alone)."""
    if base is None:
        from uvicorn.config import LOGGING_CONFIG

        base = LOGGING_CONFIG
    config = copy.deepcopy(base)
    handlers: dict[str, dict[str, Any]] = config.setdefault("handlers", {})
    for handler in handlers.values():
        handler["()"] = _rate_limited_factory(handler.pop("class", "logging.StreamHandler"))
    config.setdefault("formatters", {})["modelyard"] = {"format": "%(message)s"}
    handlers["modelyard"] = {
        "()": _rate_limited_factory("logging.StreamHandler"),
        "formatter": "modelyard",
        "stream": "ext://sys.stderr",
    }
    config["root"] = {"handlers": ["modelyard"], "level": "WARNING"}
    return config


def _rate_limited_factory(class_path: str) -> Callable[..., logging.Handler]:
    """dictConfig's `()`: build the handler `class_path` names, then rate-limit it."""
    module, _, name = class_path.rpartition(".")

    def build(**kwargs: Any) -> logging.Handler:
        import importlib

        handler: logging.Handler = getattr(importlib.import_module(module), name)(**kwargs)
        install(handler)
        return handler

    return build
