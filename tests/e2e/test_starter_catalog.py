"""The shipped starter catalog (models/) on a live `modelyard serve`: every model is registered
with its card, collection, default example and cover, and every default example, sent again
through the API with the official Python client, gives the result that was recorded.

Real environments, real worker processes, real weights; each model boots once here.
"""

from __future__ import annotations

import io
import json
import math
import re
import wave
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import yaml
from live import ROOT, LiveServer, Tls, serving
from PIL import Image
from predicting import eventually

MODELS = ROOT / "models"
INDEX = yaml.safe_load((MODELS / "catalog.yaml").read_text())
OWNER = "modelyard"
Fetch = Callable[[str], bytes]


@pytest.fixture(scope="module")
def starter(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    with serving(tmp_path_factory, tls, "starter", "--catalog") as live:  # models/, as shipped
        yield live


@pytest.fixture(scope="module")
def fetch(starter: LiveServer) -> Iterator[Fetch]:
    """Downloads a URL the server handed out, without a token (as the clients do)."""
    with httpx.Client(verify=starter.tls.context(), timeout=60) as anonymous:

        def get(url: str) -> bytes:
            assert url.startswith(starter.url + "/delivery/"), url
            response = anonymous.get(url)
            assert response.status_code == 200, (url, response.status_code)
            return response.content

        yield get


def model_json(starter: LiveServer, name: str) -> dict[str, Any]:
    with starter.http() as api:
        response = eventually(
            lambda: (
                (r := api.get(f"/v1/models/{OWNER}/{name}")).is_success
                and r.json()["default_example"]
                and r
            ),
            f"{OWNER}/{name} with its example",
        )
    return response.json()


def test_every_model_is_registered_with_card_example_and_cover(
    starter: LiveServer, fetch: Fetch
) -> None:
    for name, meta in INDEX.items():
        model = model_json(starter, name)
        assert model["visibility"] == "public" and model["description"] == meta["description"]
        example = model["default_example"]
        assert example["status"] == "succeeded" and example["output"] is not None, name
        assert example["version"] == model["latest_version"]["id"]
        cover = Image.open(io.BytesIO(fetch(model["cover_image_url"])))
        assert cover.size == (768, 432), name
    with starter.http() as api:
        for slug in ("text", "image", "audio"):
            members = [m["name"] for m in api.get(f"/v1/collections/{slug}").json()["models"]]
            assert sorted(members) == sorted(n for n, m in INDEX.items() if m["collection"] == slug)
        card = api.get(f"/v1/models/{OWNER}/ocr/readme").text
        assert card == (MODELS / "ocr" / "README.md").read_text()
        found = api.get("/v1/search", params={"query": "speech"}).json()["models"]
        names = {m["model"]["name"] for m in found}
        assert {"speech-to-text", "text-to-speech"} <= names


def rerun(starter: LiveServer, name: str) -> tuple[Any, Any]:
    """(recorded output, the output of the default example's input sent again)."""
    example = model_json(starter, name)["default_example"]
    client = starter.replicate()
    output = client.run(f"{OWNER}/{name}", input=example["input"], use_file_output=False)
    return example["output"], output


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_text_generation_streams_the_recorded_answer(starter: LiveServer) -> None:
    example = model_json(starter, "text-generation")["default_example"]
    assert example["input"]["temperature"] == 0  # greedy: the same answer every time
    chunks = [
        str(event)
        for event in starter.replicate().stream(f"{OWNER}/text-generation", input=example["input"])
    ]
    assert len(chunks) > 1, chunks  # token by token, not one string
    assert "".join(chunks) == "".join(example["output"])


def test_embeddings_give_the_recorded_vectors(starter: LiveServer) -> None:
    recorded, vectors = rerun(starter, "embeddings")
    assert len(vectors) == len(recorded) == 3
    assert all(cosine(a, b) > 0.9999 for a, b in zip(vectors, recorded, strict=True))
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3


def test_the_classifier_sees_the_recorded_cat(starter: LiveServer) -> None:
    recorded, labels = rerun(starter, "image-classifier")
    assert [x["label"] for x in labels] == [x["label"] for x in recorded]
    assert "cat" in labels[0]["label"]
    for new, old in zip(labels, recorded, strict=True):
        assert abs(new["probability"] - old["probability"]) < 1e-3


def test_the_text_classifier_gives_the_recorded_label(starter: LiveServer) -> None:
    recorded, labelled = rerun(starter, "text-classifier")
    assert labelled["label"] == recorded["label"] == "positive"
    assert abs(labelled["confidence"] - recorded["confidence"]) < 1e-4


def test_ocr_reads_the_recorded_text(starter: LiveServer) -> None:
    recorded, read = rerun(starter, "ocr")
    assert read["text"] == recorded["text"] and "segmentation" in read["text"]


def test_speech_to_text_hears_the_recorded_words(starter: LiveServer) -> None:
    recorded, heard = rerun(starter, "speech-to-text")
    assert heard["text"] == recorded["text"] and "planning meeting" in heard["text"]


def wav_seconds(data: bytes) -> float:
    """Length of a 24 kHz mono 16-bit WAV (what the voice writes)."""
    with wave.open(io.BytesIO(data)) as audio:
        assert (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) == (24000, 1, 2)
        return audio.getnframes() / audio.getframerate()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def test_text_to_speech_says_it_the_same_way(starter: LiveServer, fetch: Fetch) -> None:
    """The same text and seed give the same speech: as long as the recording, and saying the same
    words (heard back by the catalog's speech-to-text). Not the same bytes: those differed on
    another machine of the same kind."""
    text = model_json(starter, "text-to-speech")["default_example"]["input"]["text"]
    recorded, url = rerun(starter, "text-to-speech")
    spoken, before = wav_seconds(fetch(url)), wav_seconds(fetch(recorded))
    assert spoken > 5.0 and spoken == pytest.approx(before, abs=0.25), (spoken, before)
    heard = starter.replicate().run(
        f"{OWNER}/speech-to-text", input={"audio": url}, use_file_output=False
    )
    assert heard["duration"] == pytest.approx(spoken, abs=0.05), heard
    # Whisper hears this voice word for word here; two words of slack for a number or a unit it
    # may write differently ("8 megabytes", "eight megabytes").
    said, understood = words(text), words(heard["text"])
    missing = [w for w in said if w not in understood]
    assert len(missing) <= 2, (missing, heard["text"])
    assert {"voice", "ordinary", "model", "size"} <= set(understood), heard["text"]


def test_upscaling_is_four_times_the_example(starter: LiveServer, fetch: Fetch) -> None:
    example = model_json(starter, "upscaler")["default_example"]
    recorded, url = rerun(starter, "upscaler")
    source = image(fetch(example["input"]["image"]))
    upscaled, before = image(fetch(url)), image(fetch(recorded))
    assert example["input"]["scale"] == 4
    assert upscaled.size == before.size == (source.width * 4, source.height * 4)


def test_background_removal_cuts_out_the_astronaut(starter: LiveServer, fetch: Fetch) -> None:
    recorded, url = rerun(starter, "background-removal")
    cut, before = image(fetch(url)), image(fetch(recorded))
    assert cut.mode == "RGBA" and cut.size == before.size
    alpha = cut.getchannel("A")
    width, height = cut.size
    assert alpha.getpixel((2, 2)) == 0  # the backdrop is gone
    assert alpha.getpixel((width // 2, height // 2)) == 255  # the astronaut stays


def test_the_example_files_are_the_shipped_ones(starter: LiveServer, fetch: Fetch) -> None:
    """What the page shows is what models/<name>/example holds, byte for byte."""
    for name in INDEX:
        example = model_json(starter, name)["default_example"]
        inputs = json.loads((MODELS / name / "example" / "input.json").read_text())
        for key, value in example["input"].items():
            if isinstance(value, str) and value.startswith(starter.url + "/delivery/"):
                assert fetch(value) == (MODELS / name / "example" / inputs[key]).read_bytes()
            else:
                assert value == inputs[key], (name, key)
