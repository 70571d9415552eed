# ruff: noqa
# fmt: off
from cog import BasePredictor, Input
from cog import ConcatenateIterator as CI


class Predictor(BasePredictor):
    def predict(
        self,
        prompt: str,
        max_new_tokens: int = Input(default=512, ge=1),
        system_prompt: str = "You are a helpful assistant.",
    ) -> CI[str]:
        for word in prompt.split():
            yield word + " "
