"""Which version a create runs: a version ref or a model's latest version, resolved through a
short-lived cache (`Platform.versions`) that every change made here clears once committed."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from modelyard.store.models import ModelRow, get_model, get_version, latest_version, versions_by_id
from modelyard.store.tables import Account, Version

from .auth import can_see
from .errors import Problem, not_found
from .platform import Platform

_HEX64 = re.compile(r"^[0-9a-f]{64}$")

INVALID_VERSION = Problem(
    422,
    "The specified version does not exist (or perhaps you don't have permission to use it?)",
    title="Invalid version or not permitted",
)


@dataclass(frozen=True)
class Target:
    """The version a job runs, and the model it belongs to."""

    version: Version
    model: ModelRow


async def resolve_version(platform: Platform, account: Account, ref: str) -> Target:
    """`ref` is a 64-hex id, `owner/name:id` or `owner/name` (its latest version)."""
    candidates: list[Target] | None = platform.versions.get(ref)
    if candidates is None:
        generation = platform.versions.generation
        candidates = await asyncio.to_thread(_candidates, platform, ref)
        platform.versions.put(ref, candidates, generation)
    for target in candidates:
        if can_see(target.model.model, account):
            return target
    raise INVALID_VERSION


async def latest_of(platform: Platform, account: Account, owner: str, name: str) -> Target:
    """The latest version of owner/name (`POST /models/{owner}/{name}/predictions`): 404 for
    a model the caller cannot see, 422 for one without versions."""
    key = ("latest", owner, name)
    found: tuple[ModelRow, Target | None] | None = platform.versions.get(key)
    if found is None:
        generation = platform.versions.generation
        found = await asyncio.to_thread(_latest, platform, owner, name)
        if found is None:
            raise not_found("The requested model does not exist.")
        platform.versions.put(key, found, generation)
    model, target = found
    if not can_see(model.model, account):
        raise not_found("The requested model does not exist.")
    if target is None:
        raise INVALID_VERSION
    return target


def _latest(platform: Platform, owner: str, name: str) -> tuple[ModelRow, Target | None] | None:
    """The model and its latest version (None when it has none); None when no such model."""
    with platform.db.session() as session:
        model = get_model(session, owner, name)
        if model is None:
            return None
        version = latest_version(session, model.model)
        return model, None if version is None else Target(version, model)


def _candidates(platform: Platform, ref: str) -> list[Target]:
    """Every version `ref` may mean, before visibility is applied. Cached a moment in
    `platform.versions`, which every change of a model's versions or visibility made here
    clears once committed (`forget_versions`); a change made by another replica is seen
    within the cache's TTL."""
    with platform.db.session() as session:
        if _HEX64.match(ref):
            return [Target(version, model) for version, model in versions_by_id(session, ref)]
        owner_name, _, version_id = ref.partition(":")
        owner, _, name = owner_name.partition("/")
        model = get_model(session, owner, name) if owner and name else None
        if model is None:
            return []
        version = (
            get_version(session, model.model, version_id)
            if version_id
            else latest_version(session, model.model)
        )
        return [] if version is None else [Target(version, model)]


def forget_versions(platform: Platform) -> None:
    """A model's versions, visibility or pricing changed (and committed): resolve refs and
    billing contexts afresh."""
    platform.versions.clear()
    platform.engine.metering.forget()
