"""Text to speech: English text in, a 24 kHz mono WAV file out, with hibari (voice "heart").

hibari is an 8 MB ONNX acoustic model distilled from Kokoro-82M plus a rule/lexicon G2P, both
inside the hibari-tts wheel, so nothing is downloaded at run time. Only the bundled voice is
offered: hibari fetches its other voices from Hugging Face on first use.
"""

from __future__ import annotations

import random
import tempfile
import time

from cog import BasePredictor, Input, Path
from hibari import SAMPLE_RATE, Hibari, write_wav
from hibari.voices import voice_path

VOICE = "heart"
MAX_CHARACTERS = 5000


class Predictor(BasePredictor):
    def setup(self) -> None:
        # download_missing=False: fail instead of reaching for the network if the wheel ever
        # stopped bundling the voice. One onnxruntime thread (hibari's default): on 2 cores it
        # was faster than two (0.09-0.13 s vs 0.17-0.25 s for 7 s of speech).
        self.tts = Hibari(model=voice_path(VOICE, download_missing=False))
        # The G2P loads its lexicons lazily (~1 s); warm it up here, not in the first prediction.
        self.tts("Warm up.", seed=0)

    def predict(
        self,
        text: str = Input(
            description="English text to speak. Sentences are synthesized one by one; "
            "numbers, dates and amounts are read out",
            min_length=1,
            max_length=MAX_CHARACTERS,
        ),
        speed: float = Input(
            description="Speaking rate: 1.0 is the voice's natural pace, 0.5 slower, 2.0 faster",
            default=1.0,
            ge=0.5,
            le=2.0,
        ),
        seed: int | None = Input(
            description="Seed of the voice's noise component; the same text, speed and seed "
            "give a bit-identical file. Random when not set",
            default=None,
            ge=0,
            le=2**32 - 1,
        ),
    ) -> Path:
        if not any(ch.isalnum() for ch in text):
            raise ValueError(
                "text has nothing to speak: give words, not only punctuation or whitespace"
            )
        if seed is None:
            seed = random.randrange(2**32)
        print(f"seed: {seed}")
        started = time.perf_counter()
        audio = self.tts(text, speed=speed, seed=seed)
        if audio.size == 0:  # e.g. only symbols the G2P has no pronunciation for
            raise ValueError("text has nothing to speak: no word in it could be pronounced")
        out = Path(tempfile.mkdtemp(prefix="tts-")) / "speech.wav"
        write_wav(str(out), audio, SAMPLE_RATE)
        seconds = audio.size / SAMPLE_RATE
        print(f"{seconds:.2f} s of audio in {time.perf_counter() - started:.2f} s")
        return out
