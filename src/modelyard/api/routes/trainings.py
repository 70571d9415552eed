"""Trainings: run a version's `train:` into a destination model; get, list, cancel.

A training is a prediction of kind `training` (same queue, event log, webhooks); when it succeeds
the engine's training finisher (`engine/trainings.py`) adds a version to the destination.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from modelyard.store.models import ModelRow, get_model, get_version
from modelyard.store.tables import Account

from ..auth import AccountDep, can_edit, can_see
from ..errors import Problem, invalid_fields_problem, not_found
from ..jobs import JobRequest, Target, create_job, respond
from ..limits import Text
from ..platform import PlatformDep
from .predictions import cancel_job, get_job, list_jobs

router = APIRouter(tags=["trainings"])

_MODEL_REF = re.compile(r"^([^/\s]+)/([^/:\s]+)$")
NO_DESTINATION = Problem(404, "The specified training destination does not exist")
NO_TRAINING = Problem(422, "This version does not support training", title="Invalid version")


class TrainingRequest(JobRequest):
    destination: Text


@router.post("/models/{owner}/{name}/versions/{version_id}/trainings", status_code=201)
async def create(
    owner: str,
    name: str,
    version_id: str,
    body: TrainingRequest,
    request: Request,
    platform: PlatformDep,
    account: AccountDep,
) -> JSONResponse:
    with platform.db.session() as session:
        model = get_model(session, owner, name)
        if model is None or not can_see(model.model, account):
            raise not_found("The requested model does not exist.")
        version = get_version(session, model.model, version_id)
        if version is None:
            raise not_found("The requested version does not exist.")
        if "TrainingInput" not in version.openapi_schema.get("components", {}).get("schemas", {}):
            raise NO_TRAINING
        destination = _destination(session, account, body.destination)
    training = await create_job(
        platform,
        request,
        account,
        Target(version, model),
        body,
        kind="training",
        destination=destination,
    )
    return await respond(platform, request, training)


def _destination(session: Session, account: Account, ref: str) -> ModelRow:
    """The destination model: it must exist and be the caller's to add versions to."""
    match = _MODEL_REF.match(ref)
    if match is None:
        raise invalid_fields_problem(
            [{"type": "format", "field": "destination", "description": "must be owner/name"}],
            "Invalid request",
        )
    model = get_model(session, match.group(1), match.group(2))
    if model is None or not (can_see(model.model, account) or can_edit(model.model, account)):
        raise NO_DESTINATION
    if not can_edit(model.model, account):
        raise Problem(
            403, f"You cannot train into {model.ref}: only its owner can add versions to it."
        )
    return model


@router.get("/trainings/{training_id}")
def get(training_id: str, platform: PlatformDep, account: AccountDep) -> JSONResponse:
    return get_job(platform, account, training_id, "training")


@router.post("/trainings/{training_id}/cancel")
async def cancel(training_id: str, platform: PlatformDep, account: AccountDep) -> JSONResponse:
    return await cancel_job(platform, account, training_id, "training")


@router.get("/trainings")
def list_(
    request: Request,
    platform: PlatformDep,
    account: AccountDep,
    cursor: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    model: Annotated[str | None, Query(description="owner/name")] = None,
    version: str | None = None,
    status: str | None = None,
) -> JSONResponse:
    """Newest first, 100 a page, with the same filters as predictions."""
    return list_jobs(platform, account, "training", locals())
