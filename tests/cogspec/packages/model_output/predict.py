# ruff: noqa
# fmt: off
# A fixture: written the way real Cog models are, on purpose (typing.List, Optional, ...).
from typing import List, Optional

from cog import BaseModel, BasePredictor, Path


class Output(BaseModel):
    text: str
    score: float = 0.5
    image: Optional[Path]
    tags: List[str]
    count: int = None
    extra: dict


class Predictor(BasePredictor):
    def predict(self, prompt: str) -> Output:
        return Output(text=prompt, tags=[], image=None, extra={})
