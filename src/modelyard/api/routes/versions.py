"""Versions: push a Cog package (our stand-in for pushing an OCI image), list, get, delete."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select

from modelyard.engine.packages import InvalidPackage, PackageInfo
from modelyard.engine.views import timestamp
from modelyard.store.blobs import Blob
from modelyard.store.models import ModelRow, add_version, create_model, get_model, get_version
from modelyard.store.models import list_versions as versions_of
from modelyard.store.tables import Account, Model, Prediction, Release, Version

from ..auth import AccountDep, can_edit, can_see
from ..errors import Problem, not_found
from ..pages import page
from ..platform import Platform, PlatformDep
from ..refs import forget_versions
from .files import UPLOADS

router = APIRouter(tags=["versions"])


def version_json(version: Version) -> dict[str, Any]:
    return {
        "id": version.id,
        "created_at": timestamp(version.created_at),
        "cog_version": version.cog_version,
        "openapi_schema": version.openapi_schema,
    }


def visible_model(platform: Platform, account: Account, owner: str, name: str) -> ModelRow:
    with platform.db.session() as session:
        model = get_model(session, owner, name)
    if model is None or not can_see(model.model, account):
        raise not_found("The requested model does not exist.")
    return model


@router.post("/models/{owner}/{name}/versions", status_code=201)
async def push(
    owner: str, name: str, request: Request, platform: PlatformDep, account: AccountDep
) -> JSONResponse:
    """The body is a package archive made by `modelyard push`; the id is its sha256.

    A push refused for any reason (a broken package, a limit, no such model, a crash) leaves
    nothing behind: not its blob, not its unpacked folder, no version.

    Pushing into another account's model replaces what its users run, so even an admin does it
    only when the request says so (`?force=true`); pushing content the model already has makes
    that version its latest again (the undo of a push)."""
    forced = request.query_params.get("force") == "true"
    await asyncio.to_thread(_check_target, platform, owner, name, account, forced)
    blob = await _receive(platform, request)
    try:
        try:
            package = await asyncio.to_thread(platform.engine.inspect_package, blob.key)
        except InvalidPackage as exc:
            if exc.too_large:
                raise Problem(413, f"The package is too large: {exc}.") from None
            raise Problem(422, f"The package is not a valid Cog package: {exc}") from None
        version, created, changed = await asyncio.to_thread(
            _add_version, platform, account, owner, name, blob.key, package
        )
        if changed:  # committed: owner/name means this version from now on
            forget_versions(platform)
    except BaseException:
        # The thread runs to its end even when this request is cancelled while it waits.
        await asyncio.to_thread(_discard, platform, blob.key)
        raise
    return JSONResponse(version_json(version), status_code=201 if created else 200)


def _check_target(
    platform: Platform, owner: str, name: str, account: Account, forced: bool
) -> None:
    """Refuse, before the upload, a push into another account's model (or into one that does
    not exist there), saying what to do instead."""
    if owner == account.username:
        return
    if not account.is_admin:
        raise Problem(403, f"You cannot push to {owner}/{name}: it is not your account.")
    with platform.db.session() as session:
        exists = get_model(session, owner, name) is not None
    if not exists:
        raise _no_such_model(owner, name, account)
    if not forced:
        raise Problem(
            403,
            f"{owner}/{name} belongs to {owner}, not to you ({account.username}): a push would"
            f" replace the version its users run. Push to your own account instead"
            f" (`modelyard push DIR {account.username}/{name}`), or, to replace it on purpose"
            f" as an admin, add `?force=true` to the request (`modelyard push --force`).",
        )


def _no_such_model(owner: str, name: str, account: Account) -> Problem:
    return not_found(
        f"The model {owner}/{name} does not exist, and a push creates models only in your own"
        f" account. Create it first (`POST /v1/models` with owner {owner!r} and name"
        f" {name!r}), or push to your own account (`modelyard push DIR"
        f" {account.username}/{name}`)."
    )


def _add_version(
    platform: Platform, account: Account, owner: str, name: str, key: str, package: PackageInfo
) -> tuple[Version, bool, bool]:
    """The version of package `key` in owner/name (made private if new), whether it is new,
    and whether the model changed (a new version, or an existing one made latest again)."""
    with platform.db.session() as session:
        model = get_model(session, owner, name)
        if model is None and owner != account.username:
            raise _no_such_model(owner, name, account)
        if model is None:
            owner_account = session.get(Account, account.id)
            if owner_account is None:
                raise not_found(f"The model {owner}/{name} does not exist.")
            model = create_model(session, owner_account, name, visibility="private")
        elif not can_edit(model.model, account):
            raise not_found(f"The model {owner}/{name} does not exist.")
        version, created = add_version(
            session,
            model.model,
            version_id=key,
            package_key=key,
            cog_version=package.cog_version,
            openapi_schema=package.openapi_schema,
        )
        if created or model.model.latest_version_id == version.id:
            return version, created, created
        # Content the model already has, pushed again, means "run this one": it becomes the
        # latest again, which is how a push is undone (public versions cannot be deleted).
        model.model.latest_version_id = version.id
        model.model.latest_version_created_at = version.created_at
        return version, False, True


async def _receive(platform: Platform, request: Request) -> Blob:
    """The body, streamed into blob storage as it arrives (hashed and written by a worker
    thread, never collected in memory); a refused body leaves nothing behind."""
    limit = platform.settings.package_limit
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)

    def checked(chunks: Iterator[bytes]) -> Iterator[bytes]:
        received = 0
        for chunk in chunks:
            received += len(chunk)
            if received > limit:
                raise _too_large(limit)
            yield chunk
        if not received:
            raise Problem(
                400,
                "The request body is empty; send the package archive made by `modelyard push`.",
            )

    return await platform.blobs.receive(request.stream(), transform=checked, executor=UPLOADS)


def _too_large(limit: int) -> Problem:
    return Problem(413, f"The package is larger than the limit of {limit} bytes.")


def _discard(platform: Platform, key: str) -> None:
    """Remove a refused package's blob (and what unpacking it left), unless something else
    stores the same bytes."""
    if platform.engine.files.drop_unused_blob(key):
        shutil.rmtree(platform.settings.package_dir / key, ignore_errors=True)


@router.get("/models/{owner}/{name}/versions")
def list_versions(
    owner: str, name: str, platform: PlatformDep, account: AccountDep
) -> JSONResponse:
    model = visible_model(platform, account, owner, name)
    with platform.db.session() as session:
        rows = versions_of(session, model.model.id)
    base = platform.urls.api(f"/models/{owner}/{name}/versions")
    body = page(rows, len(rows), base, {}, key=lambda v: (v.created_at, v.id), render=version_json)
    return JSONResponse(body)


@router.get("/models/{owner}/{name}/versions/{version_id}")
def get_version_route(
    owner: str, name: str, version_id: str, platform: PlatformDep, account: AccountDep
) -> JSONResponse:
    model = visible_model(platform, account, owner, name)
    with platform.db.session() as session:
        version = get_version(session, model.model, version_id)
    if version is None:
        raise not_found("The requested version does not exist.")
    return JSONResponse(version_json(version))


@router.delete("/models/{owner}/{name}/versions/{version_id}", status_code=202)
def delete_version(
    owner: str, name: str, version_id: str, platform: PlatformDep, account: AccountDep
) -> Response:
    model = visible_model(platform, account, owner, name)
    if not can_edit(model.model, account):
        raise Problem(403, "Only the model's owner can delete its versions.")
    if model.model.visibility != "private":
        raise Problem(409, "Only versions of private models can be deleted (as on Replicate).")
    with platform.db.session() as session:
        version = get_version(session, model.model, version_id)
        if version is None:
            raise not_found("The requested version does not exist.")
        active = select(Prediction.id).where(
            Prediction.version_pk == version.pk, Prediction.status.in_(("starting", "processing"))
        )
        if session.scalar(active.limit(1)):
            raise Problem(409, "This version has predictions queued or running; wait or cancel.")
        if session.scalar(select(Release.id).where(Release.version_pk == version.pk).limit(1)):
            raise Problem(409, "This version is used by a deployment; change the deployment first.")
        others = select(Prediction.id).where(
            Prediction.version_pk == version.pk, Prediction.account_id != account.id
        )
        if session.scalar(others.limit(1)):
            raise Problem(409, "Someone else has run predictions with this version.")
        session.delete(version)  # with the owner's own predictions of it, as Replicate does
        row = session.get(Model, model.model.id)
        if row is not None and row.latest_version_id == version_id:
            newest = session.scalar(
                select(Version)
                .where(Version.model_id == row.id, Version.id != version_id)
                .order_by(Version.created_at.desc())
                .limit(1)
            )
            row.latest_version_id = newest.id if newest else None
            row.latest_version_created_at = newest.created_at if newest else None
    forget_versions(platform)  # after the commit: a lookup meanwhile would cache the old row
    return Response(status_code=202)
