# Writes "weights": the word to learn, repeated. `seconds` keeps it busy (for cancel tests).
import tempfile
import time

from cog import BaseModel, Input, Path


class TrainingOutput(BaseModel):
    weights: Path


def train(
    word: str = Input(description="What to learn", default="modelyard"),
    times: int = Input(description="How often to repeat it", default=1, ge=1, le=10),
    seconds: float = Input(description="Seconds to take", default=0.0, ge=0),
) -> TrainingOutput:
    print(f"learning {word!r} x{times}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    out = Path(tempfile.mkdtemp()) / "weights.txt"
    out.write_text(" ".join([word] * times))
    return TrainingOutput(weights=out)
