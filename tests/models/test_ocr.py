"""The OCR model (models/ocr, RapidOCR PP-OCRv4) run through the platform runtime.

A real environment (onnxruntime, OpenCV, the ONNX weights from the rapidocr-onnxruntime wheel)
and a real worker process; nothing is mocked. The model is started once for the module; the
inputs are text rendered with Pillow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from fixture_support import Result, collect, started_model
from PIL import Image, ImageDraw, ImageFont

from modelyard.cogspec import InputValidationError
from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.runtime.local import LocalModel

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "models" / "ocr"
LINES = ["Invoice 12345", "Total: $67.89"]

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def model(env_builder: EnvironmentBuilder) -> AsyncIterator[LocalModel]:
    # Plain local paths are only accepted when asked for (the CLI does the same for `@file`).
    async with started_model(PACKAGE, env_builder, allow_local_paths=True) as started:
        yield started


async def run(model: LocalModel, payload: dict[str, Any]) -> Result:
    """One prediction; the model may take up to two minutes on a loaded machine."""
    return await collect(model, payload, timeout=120.0, limit=150.0)


def render(path: Path, lines: list[str]) -> Path:
    """Black text on white, one line every 80 px, large enough to read reliably."""
    image = Image.new("RGB", (800, 80 * len(lines) + 40), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=48)
    for i, line in enumerate(lines):
        draw.text((30, 20 + 80 * i), line, fill="black", font=font)
    image.save(path)
    return path


def squash(text: str) -> str:
    # The Chinese+English recognizer drops some spaces ("InvoiceNo.12345"), so compare without.
    return "".join(text.split())


async def test_reads_rendered_text(model: LocalModel, tmp_path: Path) -> None:
    done = await run(model, {"image": str(render(tmp_path / "invoice.png", LINES))})
    assert done.status == "succeeded", done.error
    output = done.output
    assert "12345" in squash(output["text"])
    assert "67.89" in squash(output["text"])
    assert len(output["lines"]) == len(LINES)
    for line in output["lines"]:
        assert 0.5 <= line["score"] <= 1.0
        assert len(line["box"]) == 4 and all(len(point) == 2 for point in line["box"])
    # Lines come top to bottom, and the first box sits above the second.
    first, second = output["lines"]
    assert "12345" in squash(first["text"]) and "67.89" in squash(second["text"])
    assert max(y for _, y in first["box"]) <= min(y for _, y in second["box"])
    assert output["text"] == "\n".join(line["text"] for line in output["lines"])


async def test_blank_image_gives_no_lines(model: LocalModel, tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.new("RGB", (320, 200), "white").save(blank)
    done = await run(model, {"image": str(blank)})
    assert done.status == "succeeded", done.error
    assert done.output == {"text": "", "lines": []}


async def test_min_score_above_every_line_drops_them(model: LocalModel, tmp_path: Path) -> None:
    done = await run(model, {"image": str(render(tmp_path / "t.png", LINES)), "min_score": 1.0})
    assert done.status == "succeeded", done.error
    assert all(line["score"] >= 1.0 for line in done.output["lines"])


async def test_non_image_file_fails_clearly(model: LocalModel, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.png"
    bogus.write_text("this is not an image\n")
    done = await run(model, {"image": str(bogus)})
    assert done.status == "failed"
    assert done.error is not None and "cannot read" in done.error and "as an image" in done.error
    # The worker survives a failed prediction and still reads text.
    again = await run(model, {"image": str(render(tmp_path / "ok.png", LINES[:1]))})
    assert again.status == "succeeded", again.error
    assert "12345" in squash(again.output["text"])


async def test_min_score_out_of_range_is_rejected_before_running(model: LocalModel) -> None:
    with pytest.raises(InputValidationError, match="min_score"):
        model.validate({"image": "x.png", "min_score": 1.5})
