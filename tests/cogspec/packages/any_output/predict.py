# ruff: noqa
# fmt: off
from typing import Any

from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self) -> Any:
        return {"anything": True}
