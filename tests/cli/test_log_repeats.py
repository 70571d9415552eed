"""`modelyard serve`'s log under a storm of identical errors (src/modelyard/logs.py): the first
few of each kind are written, the rest collapse into one summary line a minute.

The filter's clock is a counter the test moves (so no test waits a minute, and none depends on
how long anything takes); the records go through real handlers, as `serve` configures them.
"""

from __future__ import annotations

import io
import logging
import logging.config
from collections.abc import Iterator

import pytest

from modelyard.logs import BURST, RepeatFilter, logging_config


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO, RepeatFilter, Clock]]:
    stream, clock = io.StringIO(), Clock()
    handler = logging.StreamHandler(stream)
    repeats = RepeatFilter(clock=clock).attach(handler)
    logger = logging.getLogger("modelyard.test_log_repeats")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield logger, stream, repeats, clock
    finally:
        logger.removeHandler(handler)
        if repeats._timer is not None:
            repeats._timer.cancel()


def disk_full(logger: logging.Logger, n: int) -> None:
    try:
        raise OSError(28, "No space left on device")
    except OSError:
        logger.exception("events of %s not written", f"p{n}")


def test_a_storm_of_one_error_is_a_few_lines_and_a_summary(logged: tuple) -> None:  # type: ignore[type-arg]
    logger, stream, repeats, clock = logged
    for n in range(11_000):
        disk_full(logger, n)
    text = stream.getvalue()
    assert text.count("Traceback") == BURST
    assert "repeated" not in text
    clock.now += 60  # the minute is over: its summary comes out, once
    repeats.flush()
    repeats.flush()
    summary = stream.getvalue()[len(text) :]
    assert summary == "events of p0 not written ... repeated 10995 times in the last minute\n"
    disk_full(logger, 11_000)  # a new minute lets the first few through again
    assert stream.getvalue().count("Traceback") == BURST + 1


def test_the_summary_also_comes_with_the_next_record_of_its_kind(logged: tuple) -> None:  # type: ignore[type-arg]
    logger, stream, _, clock = logged
    for n in range(BURST + 1):
        disk_full(logger, n)
    clock.now += 61
    disk_full(logger, 99)
    lines = [line for line in stream.getvalue().splitlines() if "not written" in line]
    assert lines[-2:] == ["events of p0 not written ... repeated once in the last minute",
                          "events of p99 not written"]  # fmt: skip


def test_kinds_are_counted_apart_and_info_is_never_held(logged: tuple) -> None:  # type: ignore[type-arg]
    logger, stream, _, _ = logged
    logger.setLevel(logging.INFO)
    for n in range(50):
        logger.warning("webhook %s failed", n)
        logger.error("the writer stopped")
        logger.info("progress %s", n)
    lines = stream.getvalue().splitlines()
    assert sum(line.startswith("webhook") for line in lines) == BURST
    assert lines.count("the writer stopped") == BURST
    assert sum(line.startswith("progress") for line in lines) == 50


def test_serve_rate_limits_every_handler_it_configures() -> None:
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.access")]
    before = [(list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    try:
        logging.config.dictConfig(logging_config())
        handlers = [handler for lg in loggers for handler in lg.handlers]
        assert len(handlers) == 3
        for handler in handlers:
            assert any(isinstance(f, RepeatFilter) for f in handler.filters), handler
    finally:  # the test process's logging as it was
        for lg, (handlers, level, propagate) in zip(loggers, before, strict=True):
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate
