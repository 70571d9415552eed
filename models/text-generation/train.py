"""LoRA fine-tuning of SmolLM2-135M-Instruct on the CPU, with peft.

Each example is one chat turn: the prompt as the user's message (under the default system
prompt, as predict() sends it) and the completion as the assistant's answer; the loss counts only
the answer's tokens. The adapter (`adapter_config.json` + `adapter_model.safetensors`, about
2 MB at rank 8) is zipped into one weights file; a version made from it merges the adapter into a
copy of the GGUF file and runs it with llama.cpp (predict.py's setup, lora_gguf.py).

Training runs in transformers (torch autograd) on the float32 weights dequantized from the same
GGUF file; only training imports torch.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
import zipfile
from pathlib import Path as StdPath
from typing import Any

import torch
from cog import BaseModel, Input, Path
from predict import DEFAULT_SYSTEM_PROMPT, GGUF_FILE, weights_dir

MAX_EXAMPLES = 2000
MAX_TOKENS = 512


def load_base() -> tuple[Any, Any]:
    """The tokenizer and the float32 model, read (and dequantized) from the GGUF file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Use every core this process may run on (2 on the reference machine); torch's default
    # can count hyper-threads or cores outside the affinity mask and oversubscribe them.
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    folder = weights_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    return tokenizer, model


class TrainingOutput(BaseModel):
    weights: Path


def read_pairs(path: StdPath) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompt, completion = str(row["prompt"]), str(row["completion"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(
                f"line {number} is not a JSON object with prompt and completion: {exc}"
            ) from None
        if prompt.strip() and completion.strip():
            pairs.append((prompt, completion))
    if not pairs:
        raise ValueError("the training data holds no prompt/completion pairs")
    if len(pairs) > MAX_EXAMPLES:
        raise ValueError(f"at most {MAX_EXAMPLES} examples on a CPU; got {len(pairs)}")
    return pairs


def encode(tokenizer, prompt: str, completion: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of the whole turn, and labels that mask everything but the answer."""
    messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                {"role": "user", "content": prompt}]  # fmt: skip
    head = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    head_ids = list(head["input_ids"])
    answer_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids = (head_ids + answer_ids + [tokenizer.eos_token_id])[:MAX_TOKENS]
    labels = ([-100] * len(head_ids) + answer_ids + [tokenizer.eos_token_id])[:MAX_TOKENS]
    return torch.tensor([ids]), torch.tensor([labels])


def train(
    train_data: Path = Input(
        description='JSON lines {"prompt": ..., "completion": ...}: what to answer, and how'
    ),
    epochs: int = Input(description="Passes over the examples", default=4, ge=1, le=50),
    learning_rate: float = Input(description="AdamW's step size", default=0.002, ge=1e-6, le=0.1),
    lora_rank: int = Input(description="Rank of the LoRA matrices", default=8, ge=1, le=64),
    seed: int = Input(description="Seed for the order of the examples", default=0),
) -> TrainingOutput:
    from peft import LoraConfig, get_peft_model

    pairs = read_pairs(StdPath(train_data))
    print(f"{len(pairs)} examples, {epochs} epochs, LoRA rank {lora_rank}, lr {learning_rate}")
    torch.manual_seed(seed)
    tokenizer, model = load_base()
    config = LoraConfig(
        r=lora_rank,
        lora_alpha=2 * lora_rank,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"training {trainable:,} LoRA parameters")
    examples = [encode(tokenizer, prompt, completion) for prompt, completion in pairs]
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=learning_rate
    )
    model.train()
    order = random.Random(seed)
    started = time.monotonic()
    for epoch in range(1, epochs + 1):
        order.shuffle(examples)
        total = 0.0
        for ids, labels in examples:
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            total += loss.item()
        print(f"epoch {epoch}/{epochs}: loss {total / len(examples):.4f} "
              f"({time.monotonic() - started:.0f} s)")  # fmt: skip

    folder = StdPath(tempfile.mkdtemp())
    model.save_pretrained(folder / "adapter")
    out = Path(tempfile.mkdtemp()) / "lora-adapter.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted((folder / "adapter").rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(folder / "adapter"))
    print(f"wrote {out.name} ({out.stat().st_size:,} bytes)")
    return TrainingOutput(weights=out)
