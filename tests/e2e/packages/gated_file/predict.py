# Waits for a gate file (so a test can fill the disk meanwhile), then returns a file it wrote.
import os
import tempfile
import time

from cog import BasePredictor, Input, Path


class Predictor(BasePredictor):
    def predict(
        self,
        gate: str = Input(description="Run until this file exists (at most 120 s)", default=""),
        kilobytes: int = Input(description="Size of the file", default=64, ge=1, le=65536),
    ) -> Path:
        deadline = time.monotonic() + 120
        while gate and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.02)
        path = Path(tempfile.mkdtemp()) / "result.bin"
        path.write_bytes(os.urandom(kilobytes * 1024))
        return path
