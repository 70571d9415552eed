# setup() prints, then waits for the gate file named in ./gate_path (written by the test into
# its copy of this package), so a test can look at a prediction during the cold boot.
import os
import time
from pathlib import Path

from cog import BasePredictor


class Predictor(BasePredictor):
    def setup(self) -> None:
        print("setup: loading weights", flush=True)
        source = Path(__file__).with_name("gate_path")
        gate = source.read_text().strip() if source.exists() else ""
        deadline = time.monotonic() + 120
        while gate and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.02)
        print("setup: done", flush=True)

    def predict(self) -> str:
        print("predicting", flush=True)
        return "ready"
