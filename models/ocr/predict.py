"""OCR: find and read the lines of text in an image with RapidOCR (PP-OCRv4, ONNX, CPU).

The detection, direction-classification and recognition models ship inside the
rapidocr-onnxruntime wheel, so nothing is downloaded at run time.
"""

from __future__ import annotations

from cog import BaseModel, BasePredictor, Input, Path
from PIL import Image, UnidentifiedImageError
from rapidocr_onnxruntime import RapidOCR


class Line(BaseModel):
    text: str
    score: float
    # Four corners [x, y] in pixels: top-left, top-right, bottom-right, bottom-left.
    box: list[list[float]]


class Output(BaseModel):
    text: str
    lines: list[Line]


class Predictor(BasePredictor):
    def setup(self) -> None:
        # Loading the three ONNX sessions takes ~0.5 s; do it once, not per prediction.
        self.engine = RapidOCR()

    def predict(
        self,
        image: Path = Input(  # noqa: B008 - Cog declares inputs as defaults
            description="Image with text (PNG, JPEG, WebP, BMP, TIFF...)"
        ),
        min_score: float = Input(
            description="Drop recognized lines whose confidence is below this",
            default=0.5,
            ge=0.0,
            le=1.0,
        ),
    ) -> Output:
        # Open with Pillow first so a file that is not an image fails with a clear message
        # instead of an error from deep inside OpenCV.
        try:
            with Image.open(image) as im:
                im.load()
                rgb = im.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"image: cannot read {image.name!r} as an image ({exc})") from exc

        # The engine filters by its own text_score (0.5 by default); pass ours so lower
        # thresholds really let more lines through.
        result, _elapse = self.engine(rgb, text_score=min_score)
        lines = [
            Line(
                text=str(text),
                score=round(float(score), 4),
                box=[[float(x), float(y)] for x, y in box],
            )
            for box, text, score in (result or [])
            if float(score) >= min_score
        ]
        return Output(text="\n".join(line.text for line in lines), lines=lines)
