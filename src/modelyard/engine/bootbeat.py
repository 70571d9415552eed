"""A heartbeat in a cold start's logs: a boot can be silent for minutes (a model's `setup()`
loading weights prints nothing), and a user watching `starting` with empty logs cannot tell
a slow setup from a hung server. While a boot is silent for `interval` seconds, a line says
what it is doing and for how long: "setup() running, 30 s".
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

#: Seconds of silence before a heartbeat line; `MODELYARD_BOOT_HEARTBEAT` changes it (tests).
DEFAULT_INTERVAL = 30.0
#: The runtime's last line before the worker starts (runtime/environment.py): after it, the
#: boot is loading the predictor and running its setup().
ENVIRONMENT_READY = "Using environment "


def interval() -> float:
    value = os.environ.get("MODELYARD_BOOT_HEARTBEAT", "")
    try:
        return max(0.05, float(value)) if value else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL


class BootHeartbeat:
    """Wraps a boot's progress callback: `progress` passes lines through and notes them; `run`
    (a task for the boot's duration) writes a heartbeat line after each silent interval."""

    def __init__(self, write: Callable[[str], None], every: float | None = None) -> None:
        self._write = write
        self.every = every if every is not None else interval()
        self._phase = "starting"
        self._phase_began = self._last = time.monotonic()

    def progress(self, text: str) -> None:
        if text.startswith(ENVIRONMENT_READY):
            self._phase, self._phase_began = "setup() running", time.monotonic()
        self._last = time.monotonic()
        self._write(text)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(max(0.0, self._last + self.every - time.monotonic()))
            now = time.monotonic()
            if now - self._last >= self.every:
                self.progress(f"{self._phase}, {now - self._phase_began:.0f} s")
