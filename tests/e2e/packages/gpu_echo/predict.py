# Returns the CUDA_VISIBLE_DEVICES its worker got (the GPUs the platform gave its instance),
# after `seconds` or once its `gate` file exists, so tests hold two instances busy at once.
import os
import time

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(
        self,
        seconds: float = Input(description="How long to run without a gate", default=0.2, ge=0),
        gate: str = Input(description="Run until this file exists (at most 120 s)", default=""),
    ) -> str:
        devices = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        print(f"CUDA_VISIBLE_DEVICES={devices}", flush=True)
        deadline = time.monotonic() + (120 if gate else seconds)
        while time.monotonic() < deadline:
            if gate and os.path.exists(gate):
                break
            time.sleep(0.02)
        return devices
