"""The account's deployments (`/settings/deployments`, linked from the settings page) and one
deployment's page (`/settings/deployments/{owner}/{name}`; `/deployments/...` is the API's): its instances by state (booting, idle, busy) with their SKU and
how long each has run, and its current release's configuration. Only its owner sees it; anyone
else gets the same 404 as for a deployment that does not exist (as the API answers)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from modelyard.engine.instances import deployment_instances
from modelyard.store.deployments import get_deployment, list_deployments

from .context import error_page, render, services, sign_in_first, viewer
from .model_page import uptime

router = APIRouter()
LISTED = 200  # deployments on the list page (the API pages through more)
STATES = ("booting", "idle", "busy", "stopping")


@router.get("/settings/deployments", response_class=HTMLResponse, include_in_schema=False)
def deployments_page(request: Request) -> Response:
    who = viewer(request)
    if who.account is None:
        return sign_in_first("/settings/deployments")
    with services(request).db.session() as session:
        rows = list_deployments(session, who.account, before=None, limit=LISTED)
        shown = [
            {
                "ref": row.ref,
                "name": row.deployment.name,
                "model": row.current.model_ref if row.current else None,
                "release": row.current.release.number if row.current else None,
                "hardware": row.current.release.hardware if row.current else None,
            }
            for row in rows
        ]
    return render(request, "deployments.html", who, deployments=shown)


@router.get(
    "/settings/deployments/{owner}/{name}", response_class=HTMLResponse, include_in_schema=False
)
def deployment_page(request: Request, owner: str, name: str) -> Response:
    who = viewer(request)
    if who.account is None:
        return sign_in_first(f"/settings/deployments/{owner}/{name}")
    platform = services(request)
    with platform.db.session() as session:
        row = get_deployment(session, owner, name) if owner == who.account.username else None
        if row is None:
            return error_page(request, who, 404, "Deployment not found",
                              f"You have no deployment {owner}/{name}.")  # fmt: skip
        instances = deployment_instances(session, row.deployment.id, platform.db.shared)
        release: dict[str, Any] | None = None
        if row.current is not None:
            current = row.current.release
            idle = current.idle_timeout
            release = {
                "number": current.number,
                "model": row.current.model_ref,
                "version": row.current.version_id,
                "created_at": current.created_at,
                "hardware": current.hardware,
                "min_instances": current.min_instances,
                "max_instances": current.max_instances,
                "idle_timeout": platform.settings.idle_timeout if idle is None else idle,
                "idle_timeout_default": idle is None,
            }
    shown = [{**i, "uptime": uptime(i["uptime_seconds"])} for i in instances]
    by_state = {state: [i for i in shown if i["state"] == state] for state in STATES}
    return render(
        request,
        "deployment.html",
        who,
        ref=row.ref,
        release=release,
        instances=shown,
        by_state=by_state,
    )
