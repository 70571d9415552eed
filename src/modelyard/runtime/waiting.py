"""What a prediction waits on in the runner: a free slot (unless canceled first), its deadline;
and how long a failed setup waits before it is tried again (`Backoff`).

Every wait on a worker has a bound: a cancel the worker does not act on within `CANCEL_GRACE`
seconds kills it (runner.py), so a prediction stuck in C code, a sleep or a predictor that
swallows the cancel still ends, and the next one runs on a fresh worker.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .events import Done, Event, Log, Status

if TYPE_CHECKING:
    from .runner import Runner

#: Seconds a canceled (or timed-out) prediction has to end before its worker is killed.
CANCEL_GRACE = 5.0
#: A failed setup is not tried again for this long, doubled after each failure in a row, up to
#: the cap; a setup that succeeds resets it.
SETUP_BACKOFF_FIRST = 5.0
SETUP_BACKOFF_CAP = 300.0


@dataclass
class Backoff:
    """When a setup that failed may be tried again, and the error it failed with."""

    first: float = SETUP_BACKOFF_FIRST
    cap: float = SETUP_BACKOFF_CAP
    failures: int = 0
    error: str | None = None
    until: float = 0.0  # time.monotonic() before which no new try starts

    @property
    def delay(self) -> float:
        """The wait after the latest failure (0 when the last try succeeded)."""
        if self.failures == 0:
            return 0.0
        return min(self.cap, self.first * 2 ** min(self.failures - 1, 30))

    def failed(self, error: str) -> float:
        """A try failed: returns the seconds until the next one."""
        self.failures += 1
        self.error = error
        self.until = time.monotonic() + self.delay
        return self.delay

    def succeeded(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the failures: what failed may have changed (a success, new hardware)."""
        self.failures, self.error, self.until = 0, None, 0.0

    def remaining(self) -> float:
        """Seconds until a new try may start (0: now)."""
        return max(0.0, self.until - time.monotonic())


@dataclass(frozen=True)
class Kill:
    """Why the runner killed its worker: `reason` ends `prediction_id` (None: every prediction
    in flight) with `status`; the others in flight fail, saying which prediction `did`."""

    reason: str
    prediction_id: str | None = None
    status: Status = "failed"
    did: str = "timed out"

    @classmethod
    def canceled(cls, prediction_id: str) -> Kill:
        return cls(
            f"The prediction did not stop within {CANCEL_GRACE:g} seconds of its cancel, "
            "so its worker was killed and started again.",
            prediction_id,
            "canceled",
            "did not stop when it was canceled",
        )

    @classmethod
    def timed_out(cls, prediction_id: str, timeout: float) -> Kill:
        return cls(f"Prediction timed out after {timeout:g} seconds", prediction_id)

    def ending(self, prediction_id: str) -> list[Event]:
        """The events that end `prediction_id`, in flight on the killed worker."""
        if self.prediction_id not in (None, prediction_id):
            others = f"The worker was restarted because prediction {self.prediction_id} {self.did}"
            return [Done("failed", error=others)]
        if self.status == "failed":
            return [Done("failed", error=self.reason)]
        return [Log(self.reason + "\n", "stderr"), Done(self.status)]


class Deadline:
    """A prediction's timeout: at the deadline, cancel; if that does not end it within
    CANCEL_GRACE seconds, the runner kills the worker (its death then ends the prediction)."""

    def __init__(self, runner: Runner, prediction_id: str, timeout: float | None) -> None:
        self.runner = runner
        self.prediction_id = prediction_id
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.timed_out = False

    async def next(self, queue: asyncio.Queue[Event]) -> Event:
        while True:
            assert self.deadline is not None and self.timeout is not None
            try:
                return await asyncio.wait_for(queue.get(), max(self.deadline - time.monotonic(), 0))
            except TimeoutError:
                pass
            kill = Kill.timed_out(self.prediction_id, self.timeout)
            if self.timed_out:  # the runner's own kill did not end it either: a last resort
                self.deadline = None
                await self.runner._kill(kill.reason, self.prediction_id, kill)
                return await queue.get()
            self.timed_out = True
            self.runner.interrupt(self.prediction_id, kill)  # cancel; kill after CANCEL_GRACE
            self.deadline = time.monotonic() + 2 * CANCEL_GRACE

    def final(self, done: Done, items: list[Any]) -> Done:
        """The Done to report: a stream's items as its output; a timeout as the reason."""
        if not done.is_stream and not self.timed_out:
            return done  # the common case: nothing to change
        output = items if done.is_stream else done.output
        error = done.error
        status = done.status
        if self.timed_out and status != "succeeded":
            status, error = "failed", f"Prediction timed out after {self.timeout:g} seconds"
        return Done(status, output, error, done.metrics, done.predict_time, done.is_stream)


async def acquire_unless(semaphore: asyncio.Semaphore, canceled: asyncio.Event) -> bool:
    """Take a slot, or give up when `canceled` is set first; True when the slot is held."""
    if not semaphore.locked():  # the common case costs no extra tasks
        await semaphore.acquire()
        return True
    acquire = asyncio.ensure_future(semaphore.acquire())
    cancel = asyncio.ensure_future(canceled.wait())
    try:
        await asyncio.wait({acquire, cancel}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        cancel.cancel()
        if not acquire.done():
            acquire.cancel()
    if acquire.done() and not acquire.cancelled():
        if canceled.is_set():
            semaphore.release()
            return False
        return True
    return False
