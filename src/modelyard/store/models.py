"""Models and their immutable versions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .tables import Account, Model, Version, utcnow


@dataclass(frozen=True)
class ModelRow:
    """A model with its owner's username, which every rendering needs."""

    model: Model
    owner: str

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.model.name}"


def can_see(model: Model, account: Account | None) -> bool:
    """Public models, and the account's own."""
    return model.visibility == "public" or (account is not None and model.owner_id == account.id)


def get_model(session: Session, owner: str, name: str) -> ModelRow | None:
    row = session.execute(
        select(Model, Account.username)
        .join(Account, Account.id == Model.owner_id)
        .where(Account.username == owner, Model.name == name)
    ).first()
    return None if row is None else ModelRow(row[0], row[1])


def model_by_id(session: Session, model_id: int) -> ModelRow | None:
    row = session.execute(
        select(Model, Account.username)
        .join(Account, Account.id == Model.owner_id)
        .where(Model.id == model_id)
    ).first()
    return None if row is None else ModelRow(row[0], row[1])


def create_model(session: Session, owner: Account, name: str, **fields: Any) -> ModelRow:
    model = Model(owner_id=owner.id, name=name, **fields)
    session.add(model)
    session.flush()
    return ModelRow(model, owner.username)


def get_version(session: Session, model: Model, version_id: str) -> Version | None:
    return session.scalar(
        select(Version).where(Version.model_id == model.id, Version.id == version_id)
    )


def versions_by_id(session: Session, version_id: str) -> list[tuple[Version, ModelRow]]:
    """Every model holding a version with this id (the same content may be pushed twice)."""
    rows = session.execute(
        select(Version, Model, Account.username)
        .join(Model, Model.id == Version.model_id)
        .join(Account, Account.id == Model.owner_id)
        .where(Version.id == version_id)
        .order_by(Version.pk)
    ).all()
    return [(version, ModelRow(model, owner)) for version, model, owner in rows]


def latest_version(session: Session, model: Model) -> Version | None:
    if model.latest_version_id is None:
        return None
    return get_version(session, model, model.latest_version_id)


def add_version(
    session: Session,
    model: Model,
    *,
    version_id: str,
    package_key: str,
    cog_version: str,
    openapi_schema: dict[str, Any],
    weights_key: str | None = None,
) -> tuple[Version, bool]:
    """The version (created, or the existing one with the same id) and whether it is new."""
    existing = get_version(session, model, version_id)
    if existing is not None:
        return existing, False
    version = Version(
        id=version_id,
        model_id=model.id,
        package_key=package_key,
        weights_key=weights_key,
        cog_version=cog_version,
        openapi_schema=openapi_schema,
        created_at=utcnow(),
    )
    session.add(version)
    session.flush()
    model.latest_version_id = version.id
    model.latest_version_created_at = version.created_at
    return version, True


def list_versions(session: Session, model_id: int) -> list[Version]:
    """The model's versions, newest first."""
    query = (
        select(Version)
        .where(Version.model_id == model_id)
        .order_by(Version.created_at.desc(), Version.pk.desc())
    )
    return list(session.scalars(query))
