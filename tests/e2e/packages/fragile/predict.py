# setup() prints a line naming its worker; predict() can kill its own worker, so a test can
# watch the next prediction boot a fresh one. A worker is named by a random number drawn in
# setup, not its pid: in the sandbox every worker is the same pid of its own PID namespace.
import os
import random

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.name = random.randrange(1, 2**31)
        print(f"setup: worker {self.name} ready", flush=True)

    def predict(self, crash: bool = Input(description="Exit the worker", default=False)) -> int:
        if crash:
            os._exit(3)
        return self.name
