"""Absolute URLs of everything the platform hands out, all under the configured public URL."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class Urls:
    public_url: str  # no trailing slash

    def api(self, path: str) -> str:
        return f"{self.public_url}/v1{path}"

    def prediction(self, prediction_id: str, kind: str = "prediction") -> str:
        return self.api(f"/{_collection(kind)}/{prediction_id}")

    def cancel(self, prediction_id: str, kind: str = "prediction") -> str:
        return self.prediction(prediction_id, kind) + "/cancel"

    def stream(self, stream_key: str) -> str:
        """Works without auth: the key is unguessable (the JS client sends no token here)."""
        return f"{self.public_url}/v1/streams/{stream_key}"

    def web_prediction(self, prediction_id: str) -> str:
        return f"{self.public_url}/p/{prediction_id}"

    def web_model(self, ref: str) -> str:
        return f"{self.public_url}/{ref}"

    def file(self, file_id: str) -> str:
        return self.api(f"/files/{file_id}")

    def delivery(self, access_key: str, name: str) -> str:
        """An output file; the key makes it work without auth, the name keeps its extension."""
        return f"{self.public_url}/delivery/{access_key}/{quote(name)}"


def _collection(kind: str) -> str:
    return "trainings" if kind == "training" else "predictions"
