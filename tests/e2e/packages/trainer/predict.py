# Shows which weights it was given: a trained version answers with what it learned.
from cog import BasePredictor, Input, Path


class Predictor(BasePredictor):
    def setup(self, weights: Path | None = None) -> None:
        self.learned = Path(weights).read_text() if weights else None

    def predict(self, prefix: str = Input(description="Put before the answer", default="")) -> str:
        if self.learned is None:
            return prefix + "untrained"
        return prefix + "learned: " + self.learned
