# setup() always raises; each run of it says so in its log, which tests count (a file outside the
# package may be out of a sandboxed worker's reach).
from cog import BasePredictor


class Predictor(BasePredictor):
    def setup(self) -> None:
        print("setup ran", flush=True)
        raise RuntimeError("the weights are missing")

    def predict(self) -> str:
        return "unreachable"
