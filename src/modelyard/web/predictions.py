"""The account's predictions (`/p`) and a prediction's page (`/p/{id}`), which its owner may
make public to share by link."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from modelyard.engine.retention import retention_of
from modelyard.engine.views import prediction_json
from modelyard.store.models import model_by_id
from modelyard.store.predictions import PredictionFilter, get_prediction, list_predictions
from modelyard.store.tables import Prediction, Version

from .context import (
    Viewer,
    error_page,
    refuse_form,
    render,
    services,
    shown_prediction,
    sign_in_first,
    viewer,
)

router = APIRouter()
PAGE_SIZE = 100


@router.get("/p", response_class=HTMLResponse, include_in_schema=False)
def my_predictions(request: Request) -> Response:
    who = viewer(request)
    if who.account is None:
        return sign_in_first("/p")
    with services(request).db.session() as session:
        rows = list_predictions(
            session, PredictionFilter(account_id=who.account.id), before=None, limit=PAGE_SIZE
        )
    return render(request, "predictions.html", who, predictions=rows)


def visible(who: Viewer, prediction: Prediction | None, model_public: bool) -> bool:
    """Its owner sees it; others only while it is shared and its model is public."""
    if prediction is None:
        return False
    mine = who.account is not None and prediction.account_id == who.account.id
    return mine or (prediction.is_public and model_public)


@router.get("/p/{prediction_id}", response_class=HTMLResponse, include_in_schema=False)
def prediction_page(request: Request, prediction_id: str) -> HTMLResponse:
    who = viewer(request)
    platform = services(request)
    with platform.db.session() as session:
        prediction = get_prediction(session, prediction_id)
        model = model_by_id(session, prediction.model_id) if prediction else None
        model_public = model is not None and model.model.visibility == "public"
        if not visible(who, prediction, model_public):
            return error_page(request, who, 404, "Prediction not found",
                              "It does not exist, or it is not shared with you.")  # fmt: skip
        assert prediction is not None
        version = session.get(Version, prediction.version_pk)
    schema = version.openapi_schema if version else {}
    schemas = schema.get("components", {}).get("schemas", {})
    output_schema = schemas.get("TrainingOutput" if prediction.kind == "training" else "Output")
    owner = who.account is not None and prediction.account_id == who.account.id
    body = prediction_json(prediction, platform.engine.urls)
    return render(
        request,
        "prediction.html",
        who,
        prediction=prediction,
        body=shown_prediction(body, schema, prediction.kind),
        model_public=model_public,
        is_owner=owner,
        output_schema=output_schema or {},
        retention_hours=_hours(retention_of(platform.settings, prediction.source)),
    )


def _hours(seconds: float | None) -> str | None:
    """The retention as the removed notice says it: `1 hour`, `36 hours`, `90 days`, `10 minutes`."""
    if seconds is None:
        return None
    if seconds < 3600:
        minutes = seconds / 60
        return f"{minutes:g} minute" + ("" if minutes == 1 else "s")
    hours = seconds / 3600
    if hours >= 48 and hours % 24 == 0:
        return f"{hours / 24:g} days"
    return f"{hours:g} hour" + ("" if hours == 1 else "s")


@router.post("/p/{prediction_id}/share", include_in_schema=False)
def share(
    request: Request, prediction_id: str, csrf: str = Form(""), public: str = Form("")
) -> Response:
    who = viewer(request)
    if (refused := refuse_form(request, who, csrf, f"/p/{prediction_id}")) is not None:
        return refused
    assert who.account is not None
    with services(request).db.session() as session:
        prediction = session.get(Prediction, prediction_id)
        if prediction is None or prediction.account_id != who.account.id:
            return error_page(request, who, 404, "Prediction not found",
                              "Only its owner can share a prediction.")  # fmt: skip
        model = model_by_id(session, prediction.model_id)
        if public == "1" and (model is None or model.model.visibility != "public"):
            return error_page(request, who, 400, "Cannot share",
                              "Predictions of a private model stay private.")  # fmt: skip
        prediction.is_public = public == "1"
    return RedirectResponse(f"/p/{prediction_id}", status_code=303)
