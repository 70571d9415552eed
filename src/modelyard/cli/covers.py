"""Cover images for catalog models, drawn from their recorded example with Pillow.

An image in the example (output first, so an upscale or a cut-out shows its result) becomes the
cover, with transparency shown on a checkerboard; a WAV becomes its waveform with the text that
goes with it; anything else becomes a card with the model's name and its example text.
"""

from __future__ import annotations

import textwrap
import wave
from array import array
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from modelyard.engine.examples import COVER_NAMES

SIZE = (768, 432)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
BACKGROUND = (24, 28, 38)
INK = (236, 239, 244)
ACCENT = (94, 176, 239)


def make_cover(package: Path, title: str, inputs: dict[str, Any], output: Any) -> Path:
    """Write `cover.jpg` (a photo) or `cover.png` (a drawn card) into `package`; return its path."""
    files = _files(output) + _files(inputs)
    image = next((p for p in files if p.suffix.lower() in IMAGE_SUFFIXES), None)
    audio = next((p for p in files if p.suffix.lower() == ".wav"), None)
    caption = _caption(output) or _caption(inputs)  # a file or vectors out: show what went in
    if isinstance(output, dict) and isinstance(output.get("label"), str):  # a classifier
        caption = f'"{_caption(inputs)}" is {output["label"]}'

    for name in COVER_NAMES:
        (package / name).unlink(missing_ok=True)
    if image is not None:
        target = package / "cover.jpg"
        _photo(image).save(target, quality=85, optimize=True)
        return target
    target = package / "cover.png"
    if audio is not None:
        _waveform_card(audio, caption).save(target, optimize=True)
    elif _is_vectors(output):
        _vectors_card(title, caption, output).save(target, optimize=True)
    else:
        _text_card(title, caption).save(target, optimize=True)
    return target


def _photo(path: Path) -> Image.Image:
    with Image.open(path) as opened:
        image = opened.convert("RGBA")
    # Cover-crop to the card's shape; show transparency as a checkerboard, as editors do.
    image = ImageOps.fit(image, SIZE, Image.Resampling.LANCZOS)
    board = Image.new("RGBA", SIZE, (255, 255, 255, 255))
    draw = ImageDraw.Draw(board)
    for y in range(0, SIZE[1], 24):
        for x in range((y // 24) % 2 * 24, SIZE[0], 48):
            draw.rectangle((x, y, x + 23, y + 23), fill=(214, 214, 214, 255))
    return Image.alpha_composite(board, image).convert("RGB")


def _waveform_card(path: Path, caption: str) -> Image.Image:
    card = Image.new("RGB", SIZE, BACKGROUND)
    draw = ImageDraw.Draw(card)
    peaks = _peaks(path, columns=SIZE[0] // 4)
    middle, height = 170, 120
    for i, peak in enumerate(peaks):
        x = i * 4 + 2
        half = max(1, int(peak * height))
        draw.rectangle((x, middle - half, x + 2, middle + half), fill=ACCENT)
    _write(draw, caption, top=320, size=26, lines=3)
    return card


def _text_card(title: str, caption: str) -> Image.Image:
    card = Image.new("RGB", SIZE, BACKGROUND)
    draw = ImageDraw.Draw(card)
    draw.rectangle((0, 0, 12, SIZE[1]), fill=ACCENT)
    draw.text((48, 40), title, fill=ACCENT, font=ImageFont.load_default(size=44))
    _write(draw, caption, top=120, size=28, lines=8)
    return card


def _vectors_card(title: str, caption: str, vectors: list[list[float]]) -> Image.Image:
    """Each vector a strip of cells, blue below zero and orange above, under its text."""
    card = Image.new("RGB", SIZE, BACKGROUND)
    draw = ImageDraw.Draw(card)
    draw.text((48, 28), title, fill=ACCENT, font=ImageFont.load_default(size=40))
    rows = vectors[:6]
    texts = [line for line in caption.splitlines() if line.strip()] or [""] * len(rows)
    width = SIZE[0] - 96
    top, band = 100, (SIZE[1] - 120) // len(rows)
    scale = max(abs(x) for row in rows for x in row) or 1.0
    font = ImageFont.load_default(size=18)
    for i, row in enumerate(rows):
        y = top + i * band
        draw.text((48, y), textwrap.shorten(texts[min(i, len(texts) - 1)], 70), fill=INK, font=font)
        cell = width / len(row)
        for j, value in enumerate(row):
            level = min(1.0, abs(value) / scale) ** 0.5
            hue = (240, 150, 60) if value > 0 else ACCENT
            colour = tuple(int(b + (h - b) * level) for b, h in zip(BACKGROUND, hue, strict=True))
            x = 48 + j * cell
            draw.rectangle((x, y + 26, x + cell, y + band - 10), fill=colour)
    return card


def _is_vectors(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, list) and v for v in value)
        and all(isinstance(x, int | float) for v in value for x in v)
    )


def _write(draw: ImageDraw.ImageDraw, text: str, *, top: int, size: int, lines: int) -> None:
    font = ImageFont.load_default(size=size)
    wrapped = textwrap.wrap(" ".join(text.split()), width=int(SIZE[0] / (size * 0.52)))
    if len(wrapped) > lines:
        wrapped = [*wrapped[: lines - 1], wrapped[lines - 1].rstrip(".,;") + "…"]
    for i, line in enumerate(wrapped):
        draw.text((48, top + i * int(size * 1.35)), line, fill=INK, font=font)


def _peaks(path: Path, columns: int) -> list[float]:
    """The loudest sample of each column, 0..1 of the loudest overall (16-bit PCM only)."""
    with wave.open(str(path)) as audio:
        if audio.getsampwidth() != 2:
            return [0.0] * columns
        samples = array("h", audio.readframes(audio.getnframes()))[:: audio.getnchannels()]
    if not samples:
        return [0.0] * columns
    step = max(1, len(samples) // columns)
    peaks = [
        max(abs(s) for s in samples[i : i + step] or [0]) for i in range(0, step * columns, step)
    ]
    loudest = max(peaks) or 1
    return [p / loudest for p in peaks]


def _files(value: Any) -> list[Path]:
    if isinstance(value, Path):
        return [value]
    if isinstance(value, list):
        return [p for v in value for p in _files(v)]
    if isinstance(value, dict):
        return [p for v in value.values() for p in _files(v)]
    return []


def _caption(value: Any) -> str:
    """The example's text: a string, a streamed list of strings, or an object's `text`."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "".join(value)
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            return value["text"]
        strings = [_caption(v) for v in value.values()]
        return next((s for s in strings if s), "")
    return ""
