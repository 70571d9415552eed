# ruff: noqa
# fmt: off
# A fixture: written the way real Cog models are, on purpose (typing.List, Optional, ...).
from typing import List, Optional

import cog
from cog import BasePredictor, File, Input, Path


class Predictor(BasePredictor):
    def setup(self, weights: Optional[Path] = None) -> None:
        self.weights = weights

    def predict(
        self,
        image: Path = Input(description="Input image"),
        mask: cog.Path = Input(description="Mask", default=None),
        audio: File = Input(description="Deprecated File input"),
        images: List[Path] = Input(description="More images"),
        extra: list[cog.Path] = Input(default=[]),
        reference: Optional[Path] = Input(description="Optional reference"),
        url: Path = "https://example.com/cat.png",
    ) -> Path:
        return image
