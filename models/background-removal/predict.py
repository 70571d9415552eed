"""Background removal: MediaPipe selfie segmentation finds the people in an image; everything
else becomes transparent in the RGBA PNG that comes back.

Both segmentation models (`general`, 256x256 input, and `landscape`, 256x144; width x height) are .tflite files that
ship inside the mediapipe 0.10.21 wheel (`mediapipe/modules/selfie_segmentation/`) and run on CPU
with TensorFlow Lite; nothing is downloaded at run time. The legacy `mp.solutions` API used here is
gone from mediapipe 1.x, whose wheels carry no models.
"""

from __future__ import annotations

import tempfile

import numpy as np
from cog import BasePredictor, Input, Path
from mediapipe.python.solutions.selfie_segmentation import SelfieSegmentation
from PIL import Image, ImageOps, UnidentifiedImageError

#: Input name -> MediaPipe's `model_selection`.
MODELS = {"general": 0, "landscape": 1}


class Predictor(BasePredictor):
    def setup(self) -> None:
        # Each model loads in a few milliseconds (the module import takes ~2 s); load both once.
        self.segmenters = {
            name: SelfieSegmentation(model_selection=selection)
            for name, selection in MODELS.items()
        }

    def predict(
        self,
        image: Path = Input(  # noqa: B008 - Cog declares inputs as defaults
            description="Photo with one or more people (PNG, JPEG, WebP, BMP, TIFF...)"
        ),
        model: str = Input(
            description=(
                "Segmentation model: 'general' (square 256x256 input) or 'landscape' "
                "(256x144 input, meant for wide 16:9 frames)"
            ),
            default="general",
            choices=list(MODELS),
        ),
        threshold: float = Input(
            description=(
                "Pixels whose person confidence is at least this stay opaque, the rest become "
                "transparent (ignored when soft_edges is on)"
            ),
            default=0.5,
            ge=0.0,
            le=1.0,
        ),
        soft_edges: bool = Input(
            description=(
                "Use the model's confidence as the alpha channel (feathered edges, semi-"
                "transparent where the model is unsure) instead of a hard cut at threshold"
            ),
            default=False,
        ),
    ) -> Path:
        rgb, alpha_in = read_image(image)
        confidence = self.segmenters[model].process(rgb).segmentation_mask  # float32, HxW, 0..1
        if soft_edges:
            alpha = np.rint(np.clip(confidence, 0.0, 1.0) * 255.0).astype(np.uint8)
        else:
            alpha = np.where(confidence >= threshold, 255, 0).astype(np.uint8)
        if alpha_in is not None:
            # Pixels the input already had (partly) transparent stay so.
            alpha = (alpha.astype(np.uint16) * alpha_in // 255).astype(np.uint8)
        rgba = np.dstack([rgb, alpha])
        rgba[alpha == 0, :3] = 0  # no hidden background colours in the transparent area
        out = Path(tempfile.mkdtemp()) / f"{Path(image).stem or 'image'}-no-background.png"
        # zlib level 1: a third of the default level's time for a file ~8% larger (512x512: ~20 ms
        # instead of ~60 ms, more than the segmentation itself).
        Image.fromarray(rgba, "RGBA").save(out, compress_level=1)
        return out


def read_image(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The image as contiguous uint8 RGB (HxWx3), upright per its EXIF orientation, and its own
    alpha channel (HxW uint8) if it has transparency, else None.

    Opening with Pillow first makes a file that is not an image fail with a clear message instead
    of an error from inside MediaPipe.
    """
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (
                im.mode == "P" and "transparency" in im.info
            )
            if has_alpha:
                rgba = im.convert("RGBA")
                # Transparent pixels often hold arbitrary colours: show the model white there.
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                rgb = Image.alpha_composite(white, rgba).convert("RGB")
                alpha = np.asarray(rgba.getchannel("A"), dtype=np.uint8)
            elif im.mode.startswith("I"):
                # 16-bit greyscale (PNG, TIFF): Pillow's convert("RGB") clips at 255 instead of
                # scaling, which would make almost the whole image white.
                grey = np.asarray(im, dtype=np.float64) / 257.0
                rgb = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8)).convert(
                    "RGB"
                )
                alpha = None
            else:
                rgb = im.convert("RGB")
                alpha = None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"image: cannot read {path.name!r} as an image ({exc})") from exc
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)), alpha
