# ruff: noqa
# fmt: off
from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self, n: int = 2) -> list:
        return list(range(n))
