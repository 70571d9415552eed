# ruff: noqa
# fmt: off
from cog import BasePredictor, Input, Path, Secret


class Predictor(BasePredictor):
    def predict(
        self,
        api_key: Secret = Input(description="Key with a default", default="sk-default"),
        tags: list[str] = Input(default=["a"], min_length=1, max_length=3),
        sizes: list[int] = Input(description="Sizes", min_length=2),
        image: Path = None,
    ) -> list[Path]:
        return []
