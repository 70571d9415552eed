# Does nothing: for tests that need many quick predictions.
from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self) -> str:
        return "ok"
