# ruff: noqa
# fmt: off
from cog import BaseModel, Input, Path


class TrainingOutput(BaseModel):
    weights: Path


def train(
    input_images: Path = Input(description="A zip of training images"),
    steps: int = Input(default=1000, ge=10, le=6000),
    learning_rate: float = 4e-4,
    caption_prefix: str = Input(choices=["a photo of TOK", "TOK"], default="TOK"),
) -> TrainingOutput:
    return TrainingOutput(weights=input_images)
