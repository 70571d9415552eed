"""The text-to-speech model (models/text-to-speech, hibari) run through the platform runtime.

Real environments and real worker processes for two models; nothing is mocked. What the voice
says is checked by ear, so to speak: every WAV it makes is transcribed back by the speech-to-text
model (models/speech-to-text, Whisper tiny.en), started once for this module next to it.
"""

from __future__ import annotations

import json
import math
import re
import wave
from array import array
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from fixture_support import Result, collect, started_model

from modelyard.cogspec import InputValidationError
from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.runtime.events import OutputFile
from modelyard.runtime.local import LocalModel

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "models" / "text-to-speech"
EXAMPLE = PACKAGE / "example"
STT_PACKAGE = ROOT / "models" / "speech-to-text"
FOX = "The quick brown fox jumps over the lazy dog."

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def model(env_builder: EnvironmentBuilder) -> AsyncIterator[LocalModel]:
    async with started_model(PACKAGE, env_builder) as started:
        yield started


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def listener(env_builder: EnvironmentBuilder) -> AsyncIterator[LocalModel]:
    """Whisper tiny.en, to hear what the voice said (it takes the WAV as a local path)."""
    async with started_model(STT_PACKAGE, env_builder, allow_local_paths=True) as started:
        yield started


async def run(model: LocalModel, payload: dict[str, Any]) -> Result:
    """One prediction; the model may take up to two minutes on a loaded machine."""
    return await collect(model, payload, timeout=120.0, limit=150.0)


@dataclass
class Wav:
    path: Path
    rate: int
    channels: int
    width: int
    seconds: float
    rms: float  # of the 16-bit samples scaled to -1..1
    peak: float


def read_wav(path: Path) -> Wav:
    with wave.open(str(path)) as w:
        rate, channels, width, frames = (
            w.getframerate(),
            w.getnchannels(),
            w.getsampwidth(),
            w.readframes(w.getnframes()),
        )
    samples = array("h", frames)  # little-endian 16-bit PCM on this (x86) machine
    assert samples, "no samples"
    rms = math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768
    peak = max(abs(s) for s in samples) / 32768
    return Wav(path, rate, channels, width, len(samples) / channels / rate, rms, peak)


def output_wav(done: Result) -> Wav:
    assert done.status == "succeeded", done.error
    assert isinstance(done.output, OutputFile), done.output
    assert done.output.path.suffix == ".wav"
    wav = read_wav(done.output.path)
    assert (wav.rate, wav.channels, wav.width) == (24000, 1, 2)
    # Speech, not silence and not a square wave: a clearly audible level, no clipping.
    assert wav.rms > 0.02, wav
    assert wav.peak < 0.99, wav
    return wav


def words(text: str) -> list[str]:
    """Lower-case words without punctuation: how two transcripts are compared."""
    return re.findall(r"[a-z0-9']+", text.lower())


def word_errors(expected: str, heard: str) -> int:
    """Word-level edit distance (substitutions + insertions + deletions)."""
    a, b = words(expected), words(heard)
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


async def transcribe(listener: LocalModel, wav: Wav) -> str:
    heard = await run(listener, {"audio": str(wav.path)})
    assert heard.status == "succeeded", heard.error
    assert heard.output["duration"] == pytest.approx(wav.seconds, abs=0.05)
    return heard.output["text"]


async def test_speaks_the_sentence(model: LocalModel, listener: LocalModel) -> None:
    done = await run(model, {"text": FOX, "seed": 0})
    wav = output_wav(done)
    assert 1.5 < wav.seconds < 6.0, wav  # 3.1 s at the natural pace
    assert "seed: 0" in done.logs
    heard = await transcribe(listener, wav)
    # Whisper hears this voice word for word (it did on every run here); one word of slack is
    # allowed because the voice is synthetic and the listener a 39 M-parameter model.
    assert word_errors(FOX, heard) <= 1, heard


async def test_numbers_and_several_sentences(model: LocalModel, listener: LocalModel) -> None:
    text = "On the 3rd of March, 1,250 people came. Each of them paid twelve dollars."
    done = await run(model, {"text": text, "seed": 1})
    wav = output_wav(done)
    heard = words(await transcribe(listener, wav))
    # hibari reads numbers out ("one thousand two hundred fifty"); Whisper writes them back as
    # digits, so these only come back if the voice spoke them correctly.
    assert "march" in heard and "3rd" in heard, heard
    assert ("1" in heard and "250" in heard) or "1250" in heard, heard  # "1,250" splits in two
    assert "paid" in heard and ("twelve" in heard or "12" in heard), heard


async def test_seed_and_speed(model: LocalModel) -> None:
    first = output_wav(await run(model, {"text": FOX, "seed": 3}))
    again = output_wav(await run(model, {"text": FOX, "seed": 3}))
    assert first.path.read_bytes() == again.path.read_bytes()  # same seed: bit-identical

    unseeded = await run(model, {"text": FOX})
    other = output_wav(unseeded)
    assert re.search(r"^seed: \d+$", unseeded.logs, re.MULTILINE), unseeded.logs
    assert other.path.read_bytes() != first.path.read_bytes()  # a random seed was drawn
    assert other.seconds == pytest.approx(first.seconds, rel=0.05)  # same words, same pace

    fast = output_wav(await run(model, {"text": FOX, "seed": 3, "speed": 2.0}))
    slow = output_wav(await run(model, {"text": FOX, "seed": 3, "speed": 0.5}))
    assert fast.seconds < 0.75 * first.seconds < first.seconds < slow.seconds / 1.4, (
        fast.seconds,
        first.seconds,
        slow.seconds,
    )


async def test_invalid_inputs_are_rejected_before_running(model: LocalModel) -> None:
    for payload, field in (
        ({"text": ""}, "text"),
        ({}, "text"),
        ({"text": "a" * 5001}, "text"),
        ({"text": FOX, "speed": 0.4}, "speed"),
        ({"text": FOX, "speed": 2.1}, "speed"),
        ({"text": FOX, "seed": -1}, "seed"),
    ):
        with pytest.raises(InputValidationError, match=field):
            model.validate(payload)


async def test_text_without_words_fails_clearly(model: LocalModel) -> None:
    for text in ("...", "   ", "?!"):
        done = await run(model, {"text": text})
        assert done.status == "failed", (text, done.output)
        assert "text has nothing to speak" in (done.error or ""), done.error
    # The worker survives failed predictions and still speaks.
    output_wav(await run(model, {"text": "Still here.", "seed": 0}))


async def test_example_input(model: LocalModel, listener: LocalModel) -> None:
    payload = json.loads((EXAMPLE / "input.json").read_text())
    wav = output_wav(await run(model, payload))
    assert 3.0 < wav.seconds < 15.0, wav
    heard = await transcribe(listener, wav)
    assert word_errors(payload["text"], heard) <= 1, heard
