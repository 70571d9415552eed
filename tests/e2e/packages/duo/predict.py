# An async model with concurrency.max 2: one instance runs two predictions at once.
import asyncio
import os

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    async def setup(self) -> None:
        pass

    async def predict(
        self,
        tag: str = Input(description="Echoed back"),
        gate: str = Input(description="Run until this file exists (at most 120 s)", default=""),
    ) -> str:
        print(f"start {tag}", flush=True)
        for _ in range(6000):
            if not gate or os.path.exists(gate):
                break
            await asyncio.sleep(0.02)
        print(f"end {tag}", flush=True)
        return tag
