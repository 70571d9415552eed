# Runs until a gate file exists (or for `seconds`), so tests order events without timing them.
import os
import time

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(
        self,
        tag: str = Input(description="Echoed back; names the prediction in its logs"),
        seconds: float = Input(
            description="How long to run without a gate", default=0, ge=0, le=60
        ),
        gate: str = Input(description="Run until this file exists (at most 120 s)", default=""),
    ) -> str:
        print(f"start {tag}", flush=True)
        deadline = time.monotonic() + (120 if gate else seconds)
        while time.monotonic() < deadline:
            if gate and os.path.exists(gate):
                break
            time.sleep(0.02)
        print(f"end {tag}", flush=True)
        return tag
