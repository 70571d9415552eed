# An async model that takes three predictions at once through @cog.concurrent (not cog.yaml), and
# whose setup waits for the gate file named in ./gate_path, so a test can queue work during the
# cold boot. Each prediction runs until its own gate file exists.
import asyncio
import os
import time
from pathlib import Path

import cog
from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def setup(self) -> None:
        source = Path(__file__).with_name("gate_path")
        gate = source.read_text().strip() if source.exists() else ""
        deadline = time.monotonic() + 120
        while gate and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.02)

    @cog.concurrent(max=3)
    async def predict(
        self,
        tag: str = Input(description="Echoed back"),
        gate: str = Input(description="Run until this file exists (at most 120 s)", default=""),
    ) -> str:
        for _ in range(6000):
            if not gate or os.path.exists(gate):
                break
            await asyncio.sleep(0.02)
        return tag
