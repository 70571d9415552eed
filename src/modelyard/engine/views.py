"""The JSON of a prediction or training, shared by GET, `Prefer: wait`, webhooks and the web page."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from modelyard.billing.pricing import usd
from modelyard.store.tables import Prediction

from .urls import Urls


def timestamp(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with microseconds and `Z`, as Replicate writes them."""
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def prediction_json(prediction: Prediction, urls: Urls) -> dict[str, Any]:
    """Replicate's shape: `urls` holds only strings, `aborted` is never sent, metrics as they are."""
    kind = prediction.kind
    links = {
        "get": urls.prediction(prediction.id, kind),
        "cancel": urls.cancel(prediction.id, kind),
        "web": urls.web_prediction(prediction.id),
    }
    if prediction.stream_key:
        links["stream"] = urls.stream(prediction.stream_key)
    body: dict[str, Any] = {
        "id": prediction.id,
        "model": prediction.model_ref,
        "version": prediction.version_id,
        "input": prediction.input,
        "logs": prediction.logs or "",
        "output": prediction.output,
        "data_removed": prediction.data_removed,
        "error": prediction.error,
        "status": prediction.status,
        "source": prediction.source,
        "created_at": timestamp(prediction.created_at),
        "urls": links,
        "metrics": _metrics(prediction),
    }
    # Absent until set: the spec types both as strings (no null), like Replicate's own answers.
    if prediction.started_at is not None:
        body["started_at"] = timestamp(prediction.started_at)
    if prediction.completed_at is not None:
        body["completed_at"] = timestamp(prediction.completed_at)
    if prediction.deployment_ref:
        body["deployment"] = prediction.deployment_ref
    if prediction.deadline is not None:
        body["deadline"] = timestamp(prediction.deadline)
    if prediction.cost_nanos is not None:  # metered (docs/billing.md); clients ignore it
        body["cost"] = {"usd": usd(prediction.cost_nanos), "nanos": prediction.cost_nanos}
    if prediction.webhook:
        body["webhook"] = prediction.webhook
        body["webhook_events_filter"] = prediction.webhook_events_filter or []
    if kind == "training":
        if prediction.destination_ref:
            body["destination"] = prediction.destination_ref
        if body["output"] is None:  # the training schema types it as an object, not null
            del body["output"]
    return body


def _metrics(prediction: Prediction) -> dict[str, Any]:
    return dict(prediction.metrics or {})
