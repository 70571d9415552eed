# ruff: noqa
# fmt: off
# A fixture: written the way real Cog models are, on purpose (typing.Union).
from typing import Union

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(
        self,
        value: Union[str, int] = Input(description="A string or a number", default=1),
        scale: float = 1,
    ) -> float:
        return scale
