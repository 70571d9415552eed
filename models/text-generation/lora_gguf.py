"""Merge a peft LoRA adapter (what train.py writes) into the base GGUF file, for llama.cpp.

The result is a copy of the base file (same metadata, tokenizer and chat template) in which
each adapted weight W becomes W + (alpha / r) * B @ A, stored as float32; every other tensor is
copied byte for byte (still Q4_1). Only numpy and the gguf package are needed, so a fine-tuned
version starts without importing torch.

GGUF stores llama's q and k projections with their rows permuted for llama.cpp's rotary
embedding (convert_hf_to_gguf's `permute`); transformers undoes that when it loads the file, so
the adapter, trained in transformers' layout, is permuted the same way before it is added.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
from gguf.quants import dequantize
from safetensors.numpy import load_file

#: peft's module names (transformers) and the matching GGUF tensor names.
MODULES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output"}
KEY = re.compile(r"layers\.(\d+)\.self_attn\.(\w+)\.lora_([AB])\.weight$")


def permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """transformers' row order of a q/k projection to GGUF's (pairs per head interleaved)."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def adapter_deltas(folder: Path) -> dict[str, np.ndarray]:
    """`{gguf tensor name: (alpha / r) * B @ A}` from a peft adapter folder, in HF's row order."""
    config = json.loads((folder / "adapter_config.json").read_text())
    if config.get("use_rslora") or config.get("use_dora"):
        raise ValueError("only plain LoRA adapters can be merged (no rsLoRA, no DoRA)")
    scale = float(config["lora_alpha"]) / float(config["r"])
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in load_file(str(folder / "adapter_model.safetensors")).items():
        match = KEY.search(key)
        if match is None or match.group(2) not in MODULES:
            raise ValueError(f"unexpected tensor in the adapter: {key}")
        name = f"blk.{match.group(1)}.{MODULES[match.group(2)]}.weight"
        pairs.setdefault(name, {})[match.group(3)] = value.astype(np.float32)
    return {name: scale * (ab["B"] @ ab["A"]) for name, ab in pairs.items()}


def merge_adapter(base: Path, folder: Path, out: Path) -> int:
    """Write `out`: the base GGUF with the adapter in `folder` merged in. Returns the number of
    tensors changed."""
    deltas = adapter_deltas(folder)
    reader = GGUFReader(base)
    arch = str(reader.fields["general.architecture"].contents())
    heads = int(reader.fields[f"{arch}.attention.head_count"].contents())
    kv_heads = int(reader.fields[f"{arch}.attention.head_count_kv"].contents())
    writer = GGUFWriter(out, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # written by the writer itself
        sub_type = field.types[1] if field.types[0] == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), field.types[0], sub_type=sub_type)
    changed = 0
    for tensor in reader.tensors:
        delta = deltas.pop(tensor.name, None)
        if delta is None:
            writer.add_tensor(
                tensor.name, tensor.data, raw_shape=tensor.data.shape, raw_dtype=tensor.tensor_type
            )
            continue
        if tensor.name.endswith("attn_q.weight"):
            delta = permute(delta, heads)
        elif tensor.name.endswith("attn_k.weight"):
            delta = permute(delta, kv_heads)
        weight = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if weight.shape != delta.shape:
            raise ValueError(f"{tensor.name}: adapter {delta.shape} against model {weight.shape}")
        writer.add_tensor(tensor.name, weight + delta, raw_dtype=GGMLQuantizationType.F32)
        changed += 1
    if deltas:
        raise ValueError(f"the adapter names tensors the model lacks: {sorted(deltas)[:3]}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return changed
