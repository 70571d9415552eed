"""The caller's account, its webhook signing secret, and the hardware this server can run on."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..auth import AccountDep

router = APIRouter(tags=["account"])

CPU = {"sku": "cpu", "name": "CPU"}
#: Words in GPU names that say nothing about the model (Replicate's SKUs leave them out too:
#: "Tesla T4" is `gpu-t4`).
_VENDOR_WORDS = {"nvidia", "tesla", "geforce", "quadro"}
_GPU_LINE = re.compile(r"^GPU\s+\d+:\s*(?P<name>.+?)\s*(\(UUID:[^)]*\))?\s*$")


@router.get("/account")
def get_account(account: AccountDep) -> JSONResponse:
    body: dict[str, Any] = {
        "type": account.type,
        "username": account.username,
        "name": account.name,
    }
    # The spec types these as URI strings, not nullable: leave them out rather than send null.
    if account.github_url:
        body["github_url"] = account.github_url
    if account.avatar_url:
        body["avatar_url"] = account.avatar_url
    return JSONResponse(body)


@router.get("/webhooks/default/secret")
def webhook_secret(account: AccountDep) -> JSONResponse:
    return JSONResponse({"key": account.webhook_secret})


@router.get("/hardware")
def list_hardware(_: AccountDep) -> JSONResponse:
    """A bare JSON array, not a page: the clients iterate over the top level."""
    return JSONResponse(hardware())


def hardware() -> list[dict[str, str]]:
    """`cpu`, then one entry per kind of NVIDIA GPU on this machine."""
    return [CPU, *_gpus()]


def hardware_skus() -> set[str]:
    return {entry["sku"] for entry in hardware()}


@functools.cache
def _gpus() -> tuple[dict[str, str], ...]:
    """Asked once per process: GPUs do not come and go while the server runs."""
    return tuple(parse_nvidia_smi(_nvidia_smi_list()))


def _nvidia_smi_list() -> str:
    command = shutil.which("nvidia-smi")
    if command is None:
        return ""
    try:
        result = subprocess.run(
            [command, "-L"], capture_output=True, text=True, timeout=15, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""  # a broken driver means no usable GPU, not a broken hardware list
    return result.stdout if result.returncode == 0 else ""


def parse_nvidia_smi(listing: str) -> list[dict[str, str]]:
    """`nvidia-smi -L` lines (`GPU 0: Tesla T4 (UUID: GPU-…)`) to `{sku: gpu-t4, name: Nvidia
    T4 GPU}`, one entry per distinct model, in the order they first appear."""
    found: dict[str, dict[str, str]] = {}
    for line in listing.splitlines():
        match = _GPU_LINE.match(line.strip())
        if match is None:
            continue  # MIG devices and blank lines
        words = [w for w in match["name"].split() if w.lower() not in _VENDOR_WORDS]
        model = " ".join(words) or match["name"]
        slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
        if slug and f"gpu-{slug}" not in found:
            found[f"gpu-{slug}"] = {"sku": f"gpu-{slug}", "name": f"Nvidia {model} GPU"}
    return list(found.values())
