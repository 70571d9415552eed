"""Wake-ups of the followers of predictions: one asyncio.Event per followed prediction, set
when its events are committed (here, or in another replica that sent a NOTIFY)."""

from __future__ import annotations

import asyncio

from modelyard.store.predictions import TERMINAL
from modelyard.store.tables import Prediction


class Wakeups:
    """The followers' wake-ups, by prediction id (the event loop's thread only)."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def wake(self, prediction_id: str) -> None:
        wakeup = self._events.pop(prediction_id, None)
        if wakeup is not None:
            wakeup.set()

    def wake_all(self) -> None:
        for prediction_id in list(self._events):
            self.wake(prediction_id)

    def take(self, prediction_id: str) -> asyncio.Event:
        """Taken before reading, so an append between the read and the wait is not missed."""
        return self._events.setdefault(prediction_id, asyncio.Event())

    def release(
        self, prediction_id: str, wakeup: asyncio.Event, prediction: Prediction | None
    ) -> None:
        """Drop the wake-up of a prediction nothing will append to any more (None: gone, or
        over), else one would be left behind per finished wait; another waiter on it re-reads
        at its next poll."""
        over = prediction is None or prediction.status in TERMINAL
        if over and self._events.get(prediction_id) is wakeup:
            del self._events[prediction_id]

    @staticmethod
    async def changed(wakeup: asyncio.Event, timeout: float) -> None:
        """Until `wakeup` is set or `timeout` seconds pass."""
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that arrives with
        # the wake-up, and a follower would then never stop.
        try:
            async with asyncio.timeout(timeout):
                await wakeup.wait()
        except TimeoutError:
            pass
