# ruff: noqa
# fmt: off
"""Scalar inputs with every Input() constraint, written the ways real models write them."""

import cog
from cog import BasePredictor, Input

MAX_SEED = 2**32 - 1
DEFAULT_PROMPT = "an astronaut riding a horse"


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.ready = True

    def predict(
        self,
        prompt: str = Input(
            description="Text prompt", default=DEFAULT_PROMPT, min_length=1, max_length=500
        ),
        negative_prompt: str = Input(description="What to avoid", regex="^[a-z ]*$"),
        max_new_tokens: int = Input(description="Tokens to generate", ge=1, le=4096, default=128),
        temperature: float = Input(default=0.75, ge=0.01, le=5.0),
        top_p: float = cog.Input(default=1, ge=0, le=1),
        offset: int = Input(default=-3, ge=-10, le=MAX_SEED),
        shift: float = -0.5,
        steps: int = 50,
        greeting: str = "hi",
        seed: int = Input(description="Random seed", default=None),
        verbose: bool = Input(default=False, deprecated=True),
        debug: bool = True,
        count: int = Input(),
        label: str = Input(default=...),
    ) -> str:
        return prompt
