# An iterator predictor that yields once, then gets stuck where a cancel cannot reach it.
import time
import uuid
from collections.abc import Iterator

from cog import BasePredictor, Input

WORKER = uuid.uuid4().hex  # names this worker process (pids repeat in a sandbox)


class Predictor(BasePredictor):
    def predict(self, stuck: bool = Input(default=False)) -> Iterator[str]:
        yield WORKER
        said = False
        while stuck:  # says so from inside the `try`: a cancel landing just after it is swallowed too
            try:
                if not said:
                    said = True
                    print("stuck in sleep", flush=True)
                time.sleep(3600)
            except BaseException:  # noqa: BLE001
                print("ignoring the cancel", flush=True)
