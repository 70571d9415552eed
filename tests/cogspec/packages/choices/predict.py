# ruff: noqa
# fmt: off
from cog import BasePredictor, Input

SCHEDULERS = {
    "DDIM": object,
    "K_EULER": object,
    "DPMSolverMultistep": object,
}
SIZES = [512, 768, 1024]


class Predictor(BasePredictor):
    def predict(
        self,
        scheduler: str = Input(
            description="Scheduler", choices=list(SCHEDULERS.keys()), default="K_EULER"
        ),
        width: int = Input(description="Width", choices=SIZES, default=768),
        height: int = Input(choices=[512, 768], default=512),
        mode: str = Input(choices=["fast", "slow"]),
        style: str = Input(choices=["a", "b"], default=None),
    ) -> int:
        return width
