"""The classifier head shared by predict.py and train.py: softmax regression on normalised
MiniLM embeddings, fitted with full-batch gradient descent in torch, saved as JSON."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

DIMENSIONS = 384


@dataclass
class Head:
    labels: list[str]
    weight: torch.Tensor  # (labels, 384)
    bias: torch.Tensor  # (labels,)

    def scores(self, vectors: torch.Tensor) -> torch.Tensor:
        return torch.softmax(vectors @ self.weight.T + self.bias, dim=-1)

    def save(self, path: Path) -> None:
        document = {
            "labels": self.labels,
            "weight": self.weight.tolist(),
            "bias": self.bias.tolist(),
        }
        path.write_text(json.dumps(document))

    @classmethod
    def load(cls, path: Path) -> Head:
        document = json.loads(Path(path).read_text())
        labels = document["labels"]
        weight = torch.tensor(document["weight"], dtype=torch.float32)
        if not labels or weight.shape != (len(labels), DIMENSIONS):
            raise ValueError(f"{path} is not a classifier head for {DIMENSIONS}-d embeddings")
        return cls(labels, weight, torch.tensor(document["bias"], dtype=torch.float32))


def fit(
    vectors: torch.Tensor, labels: list[str], epochs: int, learning_rate: float, seed: int
) -> Head:
    names = sorted(set(labels))
    if len(names) < 2:
        raise ValueError("the training data needs at least two different labels")
    torch.manual_seed(seed)
    targets = torch.tensor([names.index(label) for label in labels])
    weight = torch.zeros(len(names), DIMENSIONS, requires_grad=True)
    bias = torch.zeros(len(names), requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=learning_rate)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(vectors @ weight.T + bias, targets)
        loss = loss + 1e-4 * weight.pow(2).sum()  # a little weight decay: small data, 384 inputs
        loss.backward()
        optimizer.step()
    return Head(names, weight.detach(), bias.detach())


def read_examples(path: Path) -> list[tuple[str, str]]:
    """(text, label) pairs from a CSV with `text` and `label` columns, or JSONL with those keys."""
    path = Path(path)
    raw = path.read_text(encoding="utf-8-sig")
    pairs: list[tuple[str, str]] = []
    if raw.lstrip().startswith("{"):
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                pairs.append((str(row["text"]), str(row["label"])))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"line {number} is not a JSON object with text and label: {exc}")
    else:
        reader = csv.DictReader(raw.splitlines())
        if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
            raise ValueError("the CSV needs a header with the columns text and label")
        pairs = [(row["text"] or "", row["label"] or "") for row in reader]
    pairs = [(t.strip(), l.strip()) for t, l in pairs if t.strip() and l.strip()]
    if not pairs:
        raise ValueError("the training data holds no labelled texts")
    return pairs


def split(pairs: list[tuple[str, str]], held_out: float, seed: int) -> tuple[list, list]:
    """Shuffled (train, test); the test part keeps at least one example per label when it can."""
    shuffled = pairs[:]
    random.Random(seed).shuffle(shuffled)
    count = int(round(len(shuffled) * held_out))
    return shuffled[count:], shuffled[:count]
