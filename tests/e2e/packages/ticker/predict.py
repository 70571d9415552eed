# An iterator model: yields `n` ticks with a log line before each; can pause after the first
# tick until a gate file exists, so a test can act while it streams.
import os
import time
from collections.abc import Iterator

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(
        self,
        n: int = Input(description="How many ticks", default=3, ge=0, le=100),
        gate: str = Input(description="After the first tick, wait for this file", default=""),
    ) -> Iterator[str]:
        for i in range(n):
            print(f"log {i}", flush=True)
            yield f"tick {i}"
            if gate and i == 0:
                deadline = time.monotonic() + 120
                while not os.path.exists(gate) and time.monotonic() < deadline:
                    time.sleep(0.02)
