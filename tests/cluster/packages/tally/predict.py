# Counts what happens to it: a line in the `ledger` file when it starts and when it sees a
# cancel, so a test knows how often the model really ran, on whichever replica.
import os
import time

from cog import BasePredictor, CancelationException, Input


def note(ledger: str, line: str) -> None:
    if ledger:
        with open(ledger, "a") as file:
            file.write(line + "\n")


class Predictor(BasePredictor):
    def predict(
        self,
        tag: str = Input(description="Names the run in the ledger; returned"),
        ledger: str = Input(description="A file to append to", default=""),
        gate: str = Input(description="Run until this file exists (at most 120 s)", default=""),
        seconds: float = Input(description="How long to run without a gate", default=0, ge=0),
    ) -> str:
        note(ledger, f"start {tag}")
        deadline = time.monotonic() + (120 if gate else seconds)
        try:
            while time.monotonic() < deadline:
                if gate and os.path.exists(gate):
                    break
                time.sleep(0.02)
        except CancelationException:
            note(ledger, f"cancel {tag}")
            raise
        return tag
