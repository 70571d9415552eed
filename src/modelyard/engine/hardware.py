"""The engine's side of the hardware table: which SKUs this installation can place, which SKU a
pool runs on (its deployment's current release, else its model's), and whether the version may
run there (`build.gpu: true` in `cog.yaml` needs a SKU with GPUs).

The API refuses what it can see is wrong (a deployment of a GPU version on `cpu`); what it cannot
see (a model switched to `cpu` after a GPU version was pushed, a SKU dropped from the table since)
fails the boot, and with it the prediction, with an error that says what to change.
"""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy.orm import Session

from modelyard.billing.hardware import Hardware, HardwareTable
from modelyard.cogspec.config import load_config
from modelyard.cogspec.errors import CogSpecError
from modelyard.store.deployments import current_release
from modelyard.store.models import model_by_id
from modelyard.store.tables import Account, Deployment, Version

from .backend import Backend, BootFailed

GPU_NEEDED = "this version needs a GPU (build.gpu: true in cog.yaml)"

# package key -> build.gpu. Keys are content hashes, so an answer never goes stale.
_needs_gpu: dict[str, bool] = {}
_needs_gpu_lock = threading.Lock()


def placeable(table: HardwareTable, backend: Backend) -> list[Hardware]:
    """The table's SKUs the backend can place now, in the table's order."""
    can_place = getattr(backend, "can_place", None)
    if can_place is None:
        # A backend that cannot answer (one written before `can_place` existed, the tests'
        # stand-ins) runs what every machine has: CPU SKUs.
        return [entry for entry in table if entry.gpus == 0]
    return [entry for entry in table if can_place(entry)]


def gpu_choices(table: HardwareTable, backend: Backend) -> str:
    """The GPU SKUs one could switch to, for error messages."""
    skus = [entry.sku for entry in placeable(table, backend) if entry.gpus > 0]
    if not skus:
        return "none is available on this installation (GET /v1/hardware lists what is)"
    return ", ".join(skus)


def needs_gpu(package_key: str, package_dir: Path) -> bool:
    """Whether the version's `cog.yaml` says `build.gpu: true` (read once per package)."""
    with _needs_gpu_lock:
        known = _needs_gpu.get(package_key)
    if known is not None:
        return known
    try:
        gpu = load_config(package_dir).gpu
    except CogSpecError:
        gpu = False  # checked when it was pushed; a package that reads badly now fails its boot
    with _needs_gpu_lock:
        _needs_gpu[package_key] = gpu
    return gpu


def chosen_sku(session: Session, version: Version, deployment_id: int | None) -> tuple[str, str]:
    """Who chose the hardware of a pool and which SKU: `("deployment o/d", release's SKU)` for a
    deployment's pool, else `("model x/y", model's SKU)`."""
    if deployment_id is not None:
        deployment = session.get(Deployment, deployment_id)
        current = current_release(session, deployment_id)
        if deployment is None or current is None:
            raise BootFailed("this deployment was deleted, or its model was")
        owner = session.get(Account, deployment.owner_id)
        ref = f"{owner.username if owner else '?'}/{deployment.name}"
        return f"deployment {ref}", current.release.hardware
    model = model_by_id(session, version.model_id)
    if model is None:
        raise BootFailed("this version's model was deleted")
    return f"model {model.ref}", model.model.hardware


def resolve(table: HardwareTable, backend: Backend, chooser: str, sku: str, gpu: bool) -> Hardware:
    """The table's entry for `sku`, once it is known to fit a version that needs a GPU or not;
    raises `BootFailed` saying what to change."""
    hardware = table.get(sku)
    if hardware is None:
        skus = ", ".join(entry.sku for entry in placeable(table, backend))
        raise BootFailed(
            f"{chooser} runs on hardware {sku!r}, which this installation's hardware table no "
            f"longer has; choose one of: {skus}"
        )
    if gpu and hardware.gpus == 0:
        raise BootFailed(
            f"{GPU_NEEDED} but {chooser} runs on {sku}; "
            f"choose GPU hardware: {gpu_choices(table, backend)}"
        )
    return hardware
