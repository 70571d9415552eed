"""The background-removal model (models/background-removal, MediaPipe 0.10.21 selfie segmentation)
run through the platform runtime.

A real environment (mediapipe, TensorFlow Lite, the .tflite models from the mediapipe wheel) and a
real worker process; nothing is mocked. The model is started once for the module. The photo is
scikit-image's astronaut (Eileen Collins in her orange suit, a flag on the left, a shuttle model on
the right, her helmet in front of her at the bottom right).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import skimage.data
from fixture_support import Result, collect, started_model
from PIL import Image

from modelyard.cogspec import InputValidationError
from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.runtime.events import OutputFile
from modelyard.runtime.local import LocalModel

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "models" / "background-removal"
ASTRONAUT = Path(skimage.data.__file__).parent / "astronaut.png"  # 512x512 RGB

# Points as (x, y) in the 512x512 photo.
FACE = (225, 120)
TORSO = (100, 400)  # the orange suit, left of the mission patch
CHEST = (250, 300)
# Three corners are backdrop and flag. The fourth, bottom right (511, 511), is not asserted: the
# helmet's metal fitting reaches it and the model is unsure there (confidence 0.48 on the PNG,
# above 0.5 on the JPEG of the example), which is a fair call, not background.
CORNERS = [(0, 0), (511, 0), (0, 511)]
# Backdrop above the flag and to both sides of the head, where nothing is a person.
BACKDROP = [(0, 0, 140, 60), (340, 0, 512, 60)]  # (left, top, right, bottom)

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def model(env_builder: EnvironmentBuilder) -> AsyncIterator[LocalModel]:
    # Plain local paths are only accepted when asked for (the CLI does the same for `@file`).
    async with started_model(PACKAGE, env_builder, allow_local_paths=True) as started:
        yield started


async def run(model: LocalModel, payload: dict[str, Any]) -> Result:
    """One prediction; the model may take up to two minutes on a loaded machine."""
    return await collect(model, payload, timeout=120.0, limit=150.0)


def cutout(done: Result) -> Image.Image:
    """The output PNG of a successful prediction, checked to be an RGBA PNG."""
    assert done.status == "succeeded", done.error
    assert isinstance(done.output, OutputFile), done.output
    assert done.output.path.suffix == ".png"
    image = Image.open(done.output.path)
    assert image.format == "PNG" and image.mode == "RGBA"
    image.load()
    return image


def alpha(image: Image.Image) -> np.ndarray:
    """The alpha channel as an (height, width) int array."""
    return np.asarray(image.getchannel("A"), dtype=np.int32)


def assert_person_cut_out(a: np.ndarray) -> None:
    """Opaque face and suit, transparent corners and backdrop, a plausible share of person."""
    for x, y in (FACE, TORSO, CHEST):
        assert a[y, x] == 255, (x, y, a[y, x])
    for x, y in CORNERS:
        assert a[y, x] == 0, (x, y, a[y, x])
    for left, top, right, bottom in BACKDROP:
        assert a[top:bottom, left:right].max() <= 2, (left, top, right, bottom)
    # She, her suit and her helmet fill about half of the frame (0.55 measured).
    assert 0.40 < (a == 255).mean() < 0.70


async def test_astronaut_background_becomes_transparent(model: LocalModel) -> None:
    image = cutout(await run(model, {"image": str(ASTRONAUT)}))
    assert image.size == (512, 512)
    a = alpha(image)
    assert_person_cut_out(a)
    # Default: a hard mask, fully opaque or fully transparent.
    assert set(np.unique(a).tolist()) == {0, 255}
    rgba = np.asarray(image)
    original = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    # The person keeps the photo's colours; the transparent area hides no background colours.
    assert np.array_equal(rgba[a == 255][:, :3], original[a == 255])
    assert not rgba[a == 0][:, :3].any()


async def test_landscape_model_also_cuts_out_the_person(model: LocalModel) -> None:
    a = alpha(cutout(await run(model, {"image": str(ASTRONAUT), "model": "landscape"})))
    assert_person_cut_out(a)


async def test_soft_edges_and_threshold(model: LocalModel) -> None:
    soft = alpha(cutout(await run(model, {"image": str(ASTRONAUT), "soft_edges": True})))
    for x, y in (FACE, TORSO):
        assert soft[y, x] == 255
    assert soft[0, 0] == 0 and soft[0, 511] == 0
    # The model's confidence: the edges are semi-transparent (6% of the pixels measured).
    assert ((soft > 0) & (soft < 255)).mean() > 0.01

    # A lower threshold keeps more pixels opaque; a higher one fewer.
    opaque = {}
    for threshold in (0.2, 0.9):
        hard = alpha(cutout(await run(model, {"image": str(ASTRONAUT), "threshold": threshold})))
        assert hard[FACE[1], FACE[0]] == 255
        opaque[threshold] = int((hard == 255).sum())
    assert opaque[0.2] > opaque[0.9]


async def test_greyscale_input(model: LocalModel, tmp_path: Path) -> None:
    grey = tmp_path / "astronaut-grey.png"
    Image.open(ASTRONAUT).convert("L").save(grey)
    image = cutout(await run(model, {"image": str(grey)}))
    assert image.size == (512, 512)
    a = alpha(image)
    for x, y in (FACE, TORSO):
        assert a[y, x] == 255
    for x, y in CORNERS:
        assert a[y, x] == 0
    rgba = np.asarray(image)
    # Grey in, grey out: the three colour channels are equal wherever the person is.
    person = rgba[a == 255]
    assert np.array_equal(person[:, 0], person[:, 1]) and np.array_equal(person[:, 1], person[:, 2])


async def test_transparent_input_keeps_its_transparency(model: LocalModel, tmp_path: Path) -> None:
    # Not square (512 wide, 420 high), and everything right of x=300 already transparent.
    source = Image.open(ASTRONAUT).convert("RGBA").crop((0, 0, 512, 420))
    pixels = np.asarray(source).copy()
    pixels[:, 300:, 3] = 0
    rgba_in = tmp_path / "astronaut-rgba.png"
    Image.fromarray(pixels, "RGBA").save(rgba_in)
    image = cutout(await run(model, {"image": str(rgba_in)}))
    assert image.size == (512, 420)
    a = alpha(image)
    assert a[FACE[1], FACE[0]] == 255 and a[400, 100] == 255  # the person, left of x=300
    assert a[0, 0] == 0 and a[0, 511] == 0
    assert not a[:, 300:].any()  # nothing that was transparent became visible


async def test_example_input(model: LocalModel) -> None:
    example = PACKAGE / "example"
    payload = json.loads((example / "input.json").read_text())
    assert isinstance(payload, dict) and set(payload) <= {
        "image",
        "model",
        "threshold",
        "soft_edges",
    }
    payload["image"] = str(example / payload["image"])
    with Image.open(payload["image"]) as source:
        size = source.size
    assert Path(payload["image"]).stat().st_size < 300_000  # example files stay small
    image = cutout(await run(model, payload))
    assert image.size == size
    a = alpha(image)
    assert a[FACE[1], FACE[0]] == 255 and a[TORSO[1], TORSO[0]] == 255
    assert a[0, 0] == 0 and a[0, size[0] - 1] == 0


async def test_non_image_file_fails_clearly(model: LocalModel, tmp_path: Path) -> None:
    bogus = tmp_path / "photo.png"
    bogus.write_text("this is not an image\n")
    done = await run(model, {"image": str(bogus)})
    assert done.status == "failed"
    assert done.error is not None
    assert "image: cannot read 'photo.png' as an image" in done.error
    # The worker survives a failed prediction and still removes backgrounds.
    again = alpha(cutout(await run(model, {"image": str(ASTRONAUT)})))
    assert again[FACE[1], FACE[0]] == 255 and again[0, 0] == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("threshold", 1.5), ("threshold", -0.1), ("model", "portrait"), ("soft_edges", "maybe")],
)
async def test_bad_inputs_are_rejected_before_running(
    model: LocalModel, field: str, value: Any
) -> None:
    with pytest.raises(InputValidationError, match=field):
        model.validate({"image": "x.png", field: value})


async def test_image_is_required(model: LocalModel) -> None:
    with pytest.raises(InputValidationError, match="image"):
        model.validate({"threshold": 0.5})
