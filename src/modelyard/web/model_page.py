"""A model's page (`/{owner}/{name}`): its card, the Playground form, runnable API code, its
examples and versions, and a Train form when the model has `train`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from modelyard.engine.instances import model_instances
from modelyard.engine.views import prediction_json
from modelyard.store.accounts import is_reserved
from modelyard.store.catalog import list_examples
from modelyard.store.models import can_see, get_model, get_version, latest_version, list_versions
from modelyard.store.predictions import get_prediction

from .context import error_page, render, services, shown_prediction, viewer
from .forms import form_fields
from .predictions import visible

router = APIRouter()
EXAMPLES_SHOWN = 12


@router.get("/{owner}/{name}", response_class=HTMLResponse, include_in_schema=False)
def model_page(
    request: Request, owner: str, name: str, version: str = "", from_: str = Query("", alias="from")
) -> HTMLResponse:
    if is_reserved(owner):  # an unknown API path stays an API 404
        raise HTTPException(404)
    who = viewer(request)
    platform = services(request)
    with platform.db.session() as session:
        row = get_model(session, owner, name)
        if row is None or not can_see(row.model, who.account):
            return error_page(request, who, 404, "Model not found",
                              f"There is no model {owner}/{name} you can see.")  # fmt: skip
        chosen = (
            get_version(session, row.model, version)
            if version
            else latest_version(session, row.model)
        )
        if version and chosen is None:
            return error_page(request, who, 404, "Version not found",
                              f"{owner}/{name} has no version {version}.")  # fmt: skip
        versions = list_versions(session, row.model.id)
        examples = list_examples(session, row.model.id, before=None, limit=EXAMPLES_SHOWN)
        # "Tweak it / run again" (`?from=<prediction id>`): that prediction fills the form, when
        # the viewer may see it and it ran this model.
        tweaked = get_prediction(session, from_) if from_ else None
        if tweaked is not None and (
            tweaked.model_id != row.model.id
            or not visible(who, tweaked, row.model.visibility == "public")
        ):
            tweaked = None
        account = who.account
        instances = None  # None: not shown (only its owner and admins see its instances)
        if account is not None and (row.model.owner_id == account.id or account.is_admin):
            instances = model_instances(session, row.model.id, platform.db.shared)
    schema: dict[str, Any] = chosen.openapi_schema if chosen else {}
    shown = [
        shown_prediction(prediction_json(p, platform.engine.urls), schema, p.kind) for p in examples
    ]
    components = schema.get("components", {}).get("schemas", {})
    return render(
        request,
        "model.html",
        who,
        model=row.model,
        ref=row.ref,
        version=chosen,
        versions=versions,
        fields=form_fields(schema) if chosen else [],
        train_fields=form_fields(schema, "TrainingInput") if "TrainingInput" in components else [],
        output_schema=components.get("Output", {}),
        examples=shown,
        default_example_id=row.model.default_example_id,
        instances=None if instances is None else [_shown(i) for i in instances],
        default_example=(
            shown_prediction(prediction_json(tweaked, platform.engine.urls), schema, tweaked.kind)
            if tweaked is not None
            else next((e for e in shown if e["id"] == row.model.default_example_id), None)
        ),
    )


def _shown(instance: dict[str, Any]) -> dict[str, Any]:
    """An instance as the page shows it: its uptime in words."""
    return {**instance, "uptime": uptime(instance["uptime_seconds"])}


def uptime(seconds: float) -> str:
    """`42 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
