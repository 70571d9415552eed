# ruff: noqa
# fmt: off
# A fixture: written the way real Cog models are, on purpose (typing.List, Optional, ...).
from typing import List, Optional

from cog import BasePredictor, Input, Secret


class Predictor(BasePredictor):
    def predict(
        self,
        prefix: Optional[str] = Input(description="Optional prefix"),
        suffix: str | None = None,
        seed: int = Input(description="Seed; random if omitted", default=None),
        plain_none: str = None,
        tags: Optional[List[str]] = None,
        count: Optional[int] = Input(default=3, ge=0),
        api_key: Secret = Input(description="API key"),
        hf_token: Secret = Input(description="HF token", default=None),
        maybe_token: Optional[Secret] = None,
        weights: list[int] = [1, -2, 3],
    ) -> List[str]:
        return []
