# ruff: noqa
# fmt: off
from cog import BasePredictor, Input, Path


class Predictor(BasePredictor):
    def predict(self, prompt: str = Input(description="Prompt")) -> Path:
        return Path("out.png")
