"""Deployments: a named pool for one version with its own scaling limits, changed by releases.

Each create or update adds a release (numbered from 1); predictions made through the deployment
run its current release's version on pools of their own, sized by the release's
`min_instances`/`max_instances` and `idle_timeout` (engine/policies.py: min instances are kept
warm, a lower max stops the surplus once idle, a new release drains the old pool).

`idle_timeout` (seconds an idle instance lives; null: the server's `--idle-timeout`) is an
extension field: Replicate's clients neither send nor read it.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, StrictFloat, StrictInt
from sqlalchemy.orm import Session

from modelyard.engine.hardware import GPU_NEEDED, gpu_choices, needs_gpu
from modelyard.engine.instances import deployment_instances
from modelyard.engine.views import timestamp
from modelyard.store import deployments as store
from modelyard.store.deployments import DeploymentRow, ReleaseConfig, ReleasePolicy
from modelyard.store.models import ModelRow, get_model, get_version, model_by_id
from modelyard.store.tables import Account, Deployment, Version

from ..auth import AccountDep, can_see
from ..errors import Problem, invalid_fields_problem, not_found
from ..jobs import JobRequest, Target, create_job, respond
from ..limits import StrictText
from ..pages import decode_cursor, page
from ..platform import Platform, PlatformDep
from .account import hardware_error

router = APIRouter(tags=["deployments"])
PAGE_SIZE = 100
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
# Far above Replicate's 5 and 20 (the machine is yours), but a number the database can store.
INSTANCES_MAX = 1_000
IDLE_TIMEOUT_MAX = 30 * 24 * 3600.0  # a month: longer is "keep it", which min_instances says


class CreateDeployment(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: StrictText
    model: StrictText
    version: StrictText
    hardware: StrictText
    min_instances: StrictInt
    max_instances: StrictInt
    idle_timeout: StrictInt | StrictFloat | None = None


class UpdateDeployment(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: StrictText | None = None
    hardware: StrictText | None = None
    min_instances: StrictInt | None = None
    max_instances: StrictInt | None = None
    idle_timeout: StrictInt | StrictFloat | None = None  # explicit null: the server's again


def account_json(account: Account) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": account.type,
        "username": account.username,
        "name": account.name,
    }
    for key in ("github_url", "avatar_url"):
        if getattr(account, key):
            body[key] = getattr(account, key)
    return body


def deployment_json(row: DeploymentRow, idle_default: float | None = None) -> dict[str, Any]:
    """Replicate's deployment object; `configuration.idle_timeout` is the release's own, or
    `idle_default` (the server's) when it has none."""
    body: dict[str, Any] = {"owner": row.owner, "name": row.deployment.name}
    if row.current is not None:
        release = row.current.release
        body["current_release"] = {
            "number": release.number,
            "model": row.current.model_ref,
            "version": row.current.version_id,
            "created_at": timestamp(release.created_at),
            "created_by": account_json(row.current.created_by),
            "configuration": {
                "hardware": release.hardware,
                "min_instances": release.min_instances,
                "max_instances": release.max_instances,
                "idle_timeout": (
                    release.idle_timeout if release.idle_timeout is not None else idle_default
                ),
            },
        }
    return body


def _invalid(field: str, description: str, kind: str = "invalid") -> Problem:
    return invalid_fields_problem(
        [{"type": kind, "field": field, "description": description}], "Invalid deployment"
    )


def _check_limits(min_instances: int, max_instances: int) -> None:
    for field, value in (("min_instances", min_instances), ("max_instances", max_instances)):
        if value < 0:
            raise _invalid(field, "must be 0 or more", "number_gte")
        if value > INSTANCES_MAX:
            raise _invalid(field, f"must be at most {INSTANCES_MAX:,}", "number_lte")
    if min_instances > max_instances:
        raise _invalid("min_instances", "must not be more than max_instances", "number_lte")


def _check_idle_timeout(value: float | None) -> None:
    if value is None:
        return
    if not 0 < value <= IDLE_TIMEOUT_MAX:
        raise _invalid(
            "idle_timeout",
            f"must be a number of seconds above 0 and at most {IDLE_TIMEOUT_MAX:,.0f} "
            "(null: the server's --idle-timeout)",
            "number_range",
        )


def _check_hardware(platform: Platform, sku: str) -> None:
    """A SKU of the hardware table that this installation can place (`GET /v1/hardware`)."""
    problem = hardware_error(platform, sku)
    if problem is not None:
        raise _invalid("hardware", problem, "enum")


def _check_fits(platform: Platform, version: Version, sku: str, field: str) -> None:
    """A version whose cog.yaml says `build.gpu: true` cannot run on a SKU without GPUs; the
    error names `field`, the one the request changed (the hardware, or the version)."""
    hardware = platform.hardware.get(sku)
    if hardware is None or hardware.gpus > 0:
        return
    package_dir = platform.engine.package_dir(version.package_key)
    if needs_gpu(version.package_key, package_dir):
        choices = gpu_choices(platform.hardware, platform.engine.backend)
        message = f"{GPU_NEEDED}, so it cannot run on {sku}; choose GPU hardware: {choices}"
        raise _invalid(field, message, "gpu_required")


def _version_of(session: Session, model: ModelRow, version_id: str) -> Version:
    version = get_version(session, model.model, version_id)
    if version is None:
        raise _invalid("version", f"{model.ref} has no version {version_id!r} you can use")
    return version


def _owned(session: Session, account: Account, owner: str, name: str) -> DeploymentRow:
    """The caller's own deployment; anyone else's answers 404 like a missing one."""
    found = store.get_deployment(session, owner, name) if owner == account.username else None
    if found is None:
        raise not_found("The requested deployment does not exist.")
    return found


@router.post("/deployments")
async def create(
    body: CreateDeployment, platform: PlatformDep, account: AccountDep
) -> JSONResponse:
    if not _NAME.fullmatch(body.name):
        raise _invalid("name", "must be lowercase letters, digits, '-', '_' or '.', at most 100")
    _check_limits(body.min_instances, body.max_instances)
    _check_idle_timeout(body.idle_timeout)
    # Off the loop: the checks may read the version's package and ask the backend.
    result, release = await asyncio.to_thread(_create, platform, account, body)
    platform.engine.control.apply(release)
    return JSONResponse(result)


def _create(
    platform: Platform, account: Account, body: CreateDeployment
) -> tuple[dict[str, Any], ReleasePolicy]:
    """The new deployment's JSON and its release's policy; every check passes before anything
    is written."""
    _check_hardware(platform, body.hardware)
    owner, _, model_name = body.model.partition("/")
    with platform.db.session() as session:
        model = get_model(session, owner, model_name) if owner and model_name else None
        if model is None or not can_see(model.model, account):
            raise _invalid("model", f"there is no model {body.model!r} you can use (owner/name)")
        version = _version_of(session, model, body.version)
        _check_fits(platform, version, body.hardware, "hardware")
        if store.get_deployment(session, account.username, body.name) is not None:
            raise Problem(
                409, f"You already have a deployment named {body.name}.", title="Conflict"
            )
        config = ReleaseConfig(
            model.model.id,
            version.pk,
            body.hardware,
            body.min_instances,
            body.max_instances,
            _seconds(body.idle_timeout),
        )
        row = store.create_deployment(
            session, session.get_one(Account, account.id), body.name, config
        )
        assert row.current is not None
        return _json(platform, row), store.release_policy(row.current.release)


def _seconds(value: float | None) -> float | None:
    return None if value is None else float(value)


def _json(platform: Platform, row: DeploymentRow) -> dict[str, Any]:
    return deployment_json(row, platform.settings.idle_timeout)


@router.get("/deployments")
def list_(platform: PlatformDep, account: AccountDep, cursor: str | None = None) -> JSONResponse:
    with platform.db.session() as session:
        rows = store.list_deployments(
            session, account, before=decode_cursor(cursor), limit=PAGE_SIZE + 1
        )
        body = page(
            rows,
            PAGE_SIZE,
            platform.urls.api("/deployments"),
            {},
            key=lambda r: (r.deployment.created_at, r.deployment.name),
            render=lambda row: _json(platform, row),
        )
    return JSONResponse(body)


@router.get("/deployments/{owner}/{name}")
def get(owner: str, name: str, platform: PlatformDep, account: AccountDep) -> JSONResponse:
    with platform.db.session() as session:
        row = _owned(session, account, owner, name)  # only its owner (or an admin) gets here
        body = _json(platform, row)
        body["instances"] = deployment_instances(session, row.deployment.id, platform.db.shared)
        return JSONResponse(body)


@router.patch("/deployments/{owner}/{name}")
async def update(
    owner: str, name: str, body: UpdateDeployment, platform: PlatformDep, account: AccountDep
) -> JSONResponse:
    changes = body.model_dump(exclude_none=True)
    if "idle_timeout" in body.model_fields_set:  # null too: back to the server's
        changes["idle_timeout"] = body.idle_timeout
    if not changes:
        raise _invalid(
            "body",
            "send at least one of version, hardware, min_instances, max_instances, idle_timeout",
        )
    _check_idle_timeout(changes.get("idle_timeout"))
    # Off the loop: the checks may read the version's package and ask the backend.
    result, release = await asyncio.to_thread(_update, platform, account, owner, name, changes)
    platform.engine.control.apply(release)  # a new version drains the old pool (policies.py)
    return JSONResponse(result)


def _update(
    platform: Platform, account: Account, owner: str, name: str, changes: dict[str, Any]
) -> tuple[dict[str, Any], ReleasePolicy]:
    """The updated deployment's JSON and its new release's policy; every check passes before
    the release is added."""
    with platform.db.session() as session:
        row = _owned(session, account, owner, name)
        if row.current is None:
            raise Problem(409, "This deployment's model was deleted; create a new deployment.")
        current = row.current.release
        low = changes.get("min_instances", current.min_instances)
        high = changes.get("max_instances", current.max_instances)
        _check_limits(low, high)
        hardware = changes.get("hardware", current.hardware)
        if "hardware" in changes:  # an unchanged SKU stays, even one this machine lost
            _check_hardware(platform, hardware)
        version = session.get_one(Version, current.version_pk)
        if "version" in changes:
            model = model_by_id(session, current.model_id)
            assert model is not None
            version = _version_of(session, model, changes["version"])
        if "hardware" in changes or "version" in changes:
            _check_fits(
                platform, version, hardware, "hardware" if "hardware" in changes else "version"
            )
        idle = changes.get("idle_timeout", current.idle_timeout)
        config = ReleaseConfig(current.model_id, version.pk, hardware, low, high, _seconds(idle))
        release = store.add_release(
            session,
            session.get_one(Deployment, row.deployment.id),
            config,
            created_by=session.get_one(Account, account.id),
        )
        return _json(platform, _owned(session, account, owner, name)), store.release_policy(release)


@router.delete("/deployments/{owner}/{name}", status_code=204)
async def delete(owner: str, name: str, platform: PlatformDep, account: AccountDep) -> Response:
    """Refused while its predictions are queued or running (Replicate wants it idle, too)."""

    def delete_if_idle(session: Session) -> int | Problem:
        """The deleted deployment's id, or why not (returned: a refusal is not a failed write)."""
        try:
            row = _owned(session, account, owner, name)
        except Problem as refusal:
            return refusal
        if store.busy(session, row.deployment.id):
            return Problem(
                409,
                "This deployment still has predictions queued or running; "
                "cancel them or let them finish, then delete it.",
                title="Conflict",
            )
        store.delete_deployment(session, row.deployment.id)
        return row.deployment.id

    # On the writer, after every create already handed to it: one of those is seen as busy.
    deployment_id = await platform.writer.write_session(delete_if_idle)
    if isinstance(deployment_id, Problem):
        raise deployment_id
    await platform.engine.control.forget(deployment_id)
    return Response(status_code=204)


@router.post("/deployments/{owner}/{name}/predictions", status_code=201)
async def create_prediction(
    owner: str,
    name: str,
    body: JobRequest,
    request: Request,
    platform: PlatformDep,
    account: AccountDep,
) -> JSONResponse:
    target, row = _release_target(platform, account, owner, name)
    release = store.release_policy(row.current.release)  # type: ignore[union-attr]
    if platform.engine.control.releases.get(row.deployment.id) != release:
        platform.engine.control.apply(release)  # e.g. made through another API replica
    prediction = await create_job(
        platform, request, account, target, body, deployment=(row.deployment.id, row.ref)
    )
    return await respond(platform, request, prediction)


def _release_target(
    platform: Platform, account: Account, owner: str, name: str
) -> tuple[Target, DeploymentRow]:
    with platform.db.session() as session:
        row = _owned(session, account, owner, name)
        if row.current is None:
            raise Problem(409, "This deployment's model was deleted; it has nothing to run.")
        version = session.get(Version, row.current.release.version_pk)
        model = model_by_id(session, row.current.release.model_id)
        assert version is not None and model is not None
        return Target(version, model), row
