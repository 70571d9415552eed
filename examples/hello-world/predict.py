import time

from cog import BasePredictor, ConcatenateIterator, Input


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.greeting = "Hello"

    def predict(
        self,
        name: str = Input(description="Who to greet", default="world"),
        repeat: int = Input(description="How many times", default=1, ge=1, le=10),
    ) -> ConcatenateIterator[str]:
        for i in range(repeat):
            print(f"greeting {i + 1} of {repeat}")
            yield f"{self.greeting}, {name}! "
            time.sleep(0.1)
