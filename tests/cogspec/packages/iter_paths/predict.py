# ruff: noqa
# fmt: off
from collections.abc import Iterator

from cog import BasePredictor, Path


class Predictor(BasePredictor):
    async def predict(self, frames: int = 3) -> Iterator[Path]:
        for i in range(frames):
            yield Path(f"frame{i}.png")
