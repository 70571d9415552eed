# setup() prints a line; predict() can kill its own worker, so a test can watch the next
# prediction boot a fresh one.
import os

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def setup(self) -> None:
        print(f"setup: worker {os.getpid()} ready", flush=True)

    def predict(self, crash: bool = Input(description="Exit the worker", default=False)) -> int:
        if crash:
            os._exit(3)
        return os.getpid()
