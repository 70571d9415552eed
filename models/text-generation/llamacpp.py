"""A small llama.cpp binding for one chat model: load a GGUF file, render the chat template,
stream generated text token by token.

llama.cpp comes prebuilt in the llama-cpp-cffi 0.4.18 wheel (a CFFI extension with a CPU build
that uses AVX2; this manylinux_2_28 wheel loads on Debian 12, the 0.4.31 one needs GCC 14's
libstdc++). Only its CPU extension module is loaded, by path: the package's own `__init__`
imports transformers<5, numba and more, which are not installed (cog.yaml installs the wheel
with --no-deps). llama-cpp-python itself has no binary wheel on PyPI (a ~5 minute compile).
"""

from __future__ import annotations

import codecs
import importlib.machinery
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODULE = "_llama_cpp_cpu"
GGML_TYPE_F32 = 0


def load_library() -> tuple[Any, Any]:
    """The CFFI `(ffi, lib)` of llama.cpp's CPU build, without importing the `llama` package."""
    spec = importlib.util.find_spec("llama")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llama-cpp-cffi is not installed (see build.run in cog.yaml)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob(f"{MODULE}.*.so"))
    if not found:
        raise RuntimeError(f"llama-cpp-cffi has no {MODULE} extension in {folder}")
    loader = importlib.machinery.ExtensionFileLoader(MODULE, str(found[0]))
    module_spec = importlib.util.spec_from_file_location(MODULE, found[0], loader=loader)
    assert module_spec is not None
    module = importlib.util.module_from_spec(module_spec)
    loader.exec_module(module)
    return module.ffi, module.lib


@dataclass
class Sampling:
    """How to pick each token: greedy when `temperature` is 0, else temperature then top-p."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


class ChatModel:
    """One GGUF model and one context (one sequence at a time, as the predictor runs)."""

    def __init__(self, path: Path, context: int, threads: int) -> None:
        self.ffi, self.lib = load_library()
        ffi, lib = self.ffi, self.lib
        # llama.cpp logs every tensor and setting to stderr while loading; keep setup's log short.
        self._quiet = ffi.callback("void(enum ggml_log_level, const char *, void *)", _ignore)
        lib.llama_log_set(self._quiet, ffi.NULL)
        lib.llama_backend_init()
        self.model = lib.llama_model_load_from_file(
            str(path).encode(), lib.llama_model_default_params()
        )
        if self.model == ffi.NULL:
            raise RuntimeError(f"llama.cpp could not load {path}")
        params = lib.llama_context_default_params()
        params.n_ctx = context
        params.n_batch = 512
        params.n_threads = params.n_threads_batch = threads
        self.ctx = lib.llama_init_from_model(self.model, params)
        if self.ctx == ffi.NULL:
            raise RuntimeError("llama.cpp could not create a context")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.generated = 0  # tokens of the last generation
        self.context = int(lib.llama_n_ctx(self.ctx))
        self.template = lib.llama_model_chat_template(self.model, ffi.NULL)
        if self.template == ffi.NULL:
            raise RuntimeError(f"{path} has no chat template")

    def chat_prompt(self, messages: list[tuple[str, str]]) -> str:
        """The conversation through the model's chat template, ending with the assistant's turn."""
        ffi = self.ffi
        keep = []  # the C strings must outlive the call
        array = ffi.new("struct llama_chat_message[]", len(messages))
        for index, (role, content) in enumerate(messages):
            keep += [ffi.new("char[]", role.encode()), ffi.new("char[]", content.encode())]
            array[index].role, array[index].content = keep[-2], keep[-1]
        size = 1024 + 2 * sum(len(role) + len(content.encode()) for role, content in messages)
        buffer = ffi.new("char[]", size)
        length = self.lib.llama_chat_apply_template(
            self.template, array, len(messages), True, buffer, size
        )
        if length < 0 or length > size:
            raise RuntimeError("llama.cpp could not apply the chat template")
        return str(ffi.string(buffer, length).decode("utf-8"))

    def tokenize(self, text: str) -> list[int]:
        """Token ids; the template's `<|im_start|>` and such are read as special tokens."""
        data = text.encode("utf-8")
        room = len(data) + 16
        out = self.ffi.new("llama_token[]", room)
        count = self.lib.llama_tokenize(self.vocab, data, len(data), out, room, False, True)
        if count < 0:
            raise RuntimeError("llama.cpp could not tokenize the prompt")
        return list(out[0:count])

    def _piece(self, token: int) -> bytes:
        buffer = self.ffi.new("char[]", 256)
        length = self.lib.llama_token_to_piece(self.vocab, token, buffer, 256, 0, False)
        return bytes(self.ffi.buffer(buffer, max(0, length)))

    def _decode(self, tokens: list[int]) -> None:
        array = self.ffi.new("llama_token[]", tokens)
        # The prompt goes in n_batch-sized chunks: llama_decode refuses larger batches.
        for start in range(0, len(tokens), 512):
            chunk = min(512, len(tokens) - start)
            batch = self.lib.llama_batch_get_one(array + start, chunk)
            if self.lib.llama_decode(self.ctx, batch) != 0:
                raise RuntimeError("llama.cpp failed to evaluate the tokens")

    def _sampler(self, sampling: Sampling) -> Any:
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if sampling.temperature == 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        else:  # transformers' order: scale by the temperature, then keep the top-p mass
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(sampling.temperature))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(sampling.top_p, 1))
            lib.llama_sampler_chain_add(
                chain, lib.llama_sampler_init_dist(sampling.seed & 0xFFFFFFFF)
            )
        return chain

    def generate(self, prompt: list[int], limit: int, sampling: Sampling) -> Iterator[str]:
        """Text pieces as tokens are generated (one per token, except where a UTF-8 character
        spans tokens); `self.generated` counts the tokens. Stops at an end-of-generation
        token or after `limit` tokens. Closing the iterator stops at the next token."""
        lib = self.lib
        self.generated = 0
        lib.llama_kv_cache_clear(self.ctx)  # a fresh conversation each time
        chain = self._sampler(sampling)
        text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            self._decode(prompt)
            for _ in range(limit):
                token = int(lib.llama_sampler_sample(chain, self.ctx, -1))
                if lib.llama_vocab_is_eog(self.vocab, token):
                    break
                self.generated += 1
                piece = text.decode(self._piece(token))
                if piece:
                    yield piece
                if self.generated < limit:
                    self._decode([token])
            rest = text.decode(b"", final=True)
            if rest:
                yield rest
        finally:
            lib.llama_sampler_free(chain)


def _ignore(level: int, text: Any, data: Any) -> None:
    """llama.cpp's log callback: drop everything (errors surface as return codes)."""
