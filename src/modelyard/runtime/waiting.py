"""What a prediction waits on in the runner: a free slot (unless canceled first), its deadline."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from .events import Done, Event

if TYPE_CHECKING:
    from .runner import Runner

CANCEL_GRACE = 5.0


class Deadline:
    """A prediction's timeout: at the deadline, cancel; if that does not end it within
    CANCEL_GRACE seconds, kill the worker (its death then ends the prediction)."""

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
            if self.timed_out:  # the cancel did not stop it either: replace the worker
                self.deadline = None
                await self.runner._kill(
                    f"Prediction timed out after {self.timeout:g} seconds", self.prediction_id
                )
                return await queue.get()
            self.timed_out = True
            await self.runner.cancel(self.prediction_id)
            self.deadline = time.monotonic() + CANCEL_GRACE

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
